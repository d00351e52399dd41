"""Incremental, resumable result files (Parquet or CSV).

While a job runs, completed chunks go to ``<out>.parts/part-*.parquet`` (or ``.csv``), each part
written to a temporary name and renamed into place, so a part is either complete or absent: a
run killed at any moment leaves only whole chunks behind. ``<out>.parts/job.json`` describes
the job; a rerun with the same ``out`` and the same job skips the chunks already stored. When
every chunk is there, the parts are merged (sorted by candidate index, checked for gaps and
duplicates) into ``out``, written atomically, and the parts directory is removed. A finished
``out`` carries its job description (Parquet metadata, or ``<out>.job.json`` beside a CSV), so
rerunning a finished job just reads the file back.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import NnMeterNasError, ResumeError

__all__ = ["ResultStore", "ResumeError", "output_format"]

JOB_KEY = b"nnmeter_nas.job"


def output_format(path: str | Path) -> str:
    """``"parquet"`` or ``"csv"`` from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise NnMeterNasError(f"cannot tell the format of {path}: name the output *.parquet or *.csv")


def _same_job(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


class ResultStore:
    """Parts of one job under ``<out>.parts`` (nothing on disk when ``out`` is None).

    ``job`` is a JSON-able description; ``chunk_of(index)`` maps candidate indices to chunks.
    """

    def __init__(self, out: str | Path | None, job: dict, *, chunk_size: int,
                 n_total: int, overwrite: bool = False) -> None:
        self.out = None if out is None else Path(out)
        self.job = job
        self.chunk_size = int(chunk_size)
        self.n_total = int(n_total)
        self.overwrite = overwrite
        self.fmt = output_format(self.out) if self.out is not None else None
        self._memory: list[Any] = []  # DataFrames when out is None
        self._lock = None

    # ------------------------------------------------------------------ paths
    @property
    def parts_dir(self) -> Path:
        assert self.out is not None
        return self.out.with_name(self.out.name + ".parts")

    @property
    def sidecar(self) -> Path:
        assert self.out is not None
        return self.out.with_name(self.out.name + ".job.json")

    # ------------------------------------------------------------------ opening
    def finished_job(self) -> dict | None:
        """Job description stored with a finished ``out`` (None when there is none)."""
        if self.out is None or not self.out.exists():
            return None
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.read_schema(self.out).metadata or {}
            except Exception:
                return None
            raw = meta.get(JOB_KEY)
            return None if raw is None else json.loads(raw)
        try:
            return json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None

    def stored_job(self) -> dict | None:
        """Job description of an unfinished run under ``<out>.parts`` (None when none)."""
        if self.out is None:
            return None
        try:
            return json.loads((self.parts_dir / "job.json").read_text())
        except (OSError, ValueError):
            return None

    def open(self) -> tuple[str, set[int]]:
        """Prepare for writing. Returns ``("done", ...)`` when ``out`` already holds this
        finished job, else ``("run", chunks already stored)``."""
        if self.out is None:
            return "run", set()
        from filelock import FileLock, Timeout

        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.out.with_name("." + self.out.name + ".lock")))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise ResumeError(f"another run is writing to {self.out} (lock "
                              f"{self._lock.lock_file}); wait for it or choose another out") \
                from None
        if self.overwrite:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            for p in (self.out, self.sidecar):
                if p.exists():
                    p.unlink()
        stored = self.stored_job()
        if stored is not None:
            if not _same_job(stored, self.job):
                raise ResumeError(
                    f"{self.parts_dir} holds an unfinished run of another job "
                    f"({_diff(stored, self.job)}); rerun it with the same arguments to finish "
                    "it, or pass overwrite=True (--overwrite) to start over")
            return "run", self._stored_chunks()
        if self.out.exists():
            finished = self.finished_job()
            if finished is not None and _same_job(finished, self.job):
                return "done", set()
            what = ("results of another job (" + _diff(finished, self.job) + ")"
                    if finished is not None else "a file nnmeter-nas did not write")
            raise ResumeError(f"{self.out} already exists and holds {what}; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another out")
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.parts_dir / "job.json", json.dumps(self.job, indent=1))
        return "run", set()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _part_files(self) -> list[Path]:
        suffix = "." + self.fmt
        return sorted(p for p in self.parts_dir.glob("part-*" + suffix))

    def _stored_chunks(self) -> set[int]:
        for tmp in self.parts_dir.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)  # a write interrupted before its rename
        done: set[int] = set()
        for part in self._part_files():
            idx = self._read(part, columns=["index"])["index"].to_numpy()
            done.update(np.unique(idx // self.chunk_size).tolist())
        return done

    # ------------------------------------------------------------------ writing
    def write(self, frames: Sequence[Any]) -> None:
        """Store DataFrames holding whole chunks as one part (atomic)."""
        if not frames:
            return
        import pandas as pd

        df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if self.out is None:
            self._memory.append(df)
            return
        first = int(df["index"].iloc[0]) // self.chunk_size
        name = f"part-{first:09d}-{uuid.uuid4().hex[:8]}.{self.fmt}"
        tmp = self.parts_dir / f".tmp-{name}"
        self._write(df, tmp)
        os.replace(tmp, self.parts_dir / name)

    def _write(self, df: Any, path: Path, job: dict | None = None) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if job is not None:
                meta = dict(table.schema.metadata or {})
                meta[JOB_KEY] = json.dumps(job).encode()
                table = table.replace_schema_metadata(meta)
            with open(path, "wb") as f:
                pq.write_table(table, f, row_group_size=1 << 20)
                f.flush()
                os.fsync(f.fileno())
        else:
            with open(path, "w", newline="") as f:
                df.to_csv(f, index=False)
                f.flush()
                os.fsync(f.fileno())

    def _read(self, path: Path, columns: list[str] | None = None) -> Any:
        import pandas as pd

        if self.fmt == "parquet":
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, usecols=columns)

    # ------------------------------------------------------------------ finishing
    def read_all(self) -> Any:
        """Every stored row (parts or memory), sorted by index, duplicates dropped."""
        import pandas as pd

        if self.out is None:
            frames = self._memory
        else:
            frames = [self._read(p) for p in self._part_files()]
        if not frames:
            return None
        df = pd.concat(frames, ignore_index=True)
        df = df.sort_values("index", kind="stable").drop_duplicates("index", keep="first")
        return df.reset_index(drop=True)

    def finish(self, normalise: Any = None) -> Any:
        """Merge the parts into ``out`` (atomic) after checking that every candidate is there
        exactly once, remove the parts and return the DataFrame."""
        df = self.read_all()
        if df is None:
            import pandas as pd

            df = pd.DataFrame({"index": np.zeros(0, dtype=np.int64)})
        if normalise is not None:
            df = normalise(df)
        idx = df["index"].to_numpy()
        if len(idx) != self.n_total or (len(idx) and not np.array_equal(
                idx, np.arange(self.n_total, dtype=idx.dtype))):
            missing = np.setdiff1d(np.arange(self.n_total), idx)[:10]
            raise NnMeterNasError(f"scoring finished with {len(idx)} of {self.n_total} rows "
                                  f"(missing candidates {missing.tolist()}...); rerun to resume")
        if self.out is not None:
            tmp = self.out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{self.out.name}")
            self._write(df, tmp, job=self.job)
            if self.fmt == "csv":
                _atomic_write_text(self.sidecar, json.dumps(self.job, indent=1))
            os.replace(tmp, self.out)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        return df

    def read_finished(self, normalise: Any = None) -> Any:
        df = self._read(self.out)
        return normalise(df) if normalise is not None else df


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _diff(a: dict | None, b: dict) -> str:
    if a is None:
        return "unknown job"
    keys = [k for k in sorted(set(a) | set(b)) if json.dumps(a.get(k), sort_keys=True,
                                                              default=str)
            != json.dumps(b.get(k), sort_keys=True, default=str)]
    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    return "differs in " + ", ".join(f"{k}: {short(a.get(k))} vs {short(b.get(k))}"
                                     for k in keys[:3]) if keys else "same"
