"""Append-only, resumable store of measurements (JSON Lines).

Every measurement is one JSON object on its own line, written and flushed (and fsync'ed)
as soon as it is taken, so an interrupted build loses at most the measurement in flight.
The first line is a header naming the backend settings; reopening a store measured with
other settings is refused rather than mixing devices. A torn last line (the process died
mid-write) is ignored when reading and cut off before the next append.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import StoreMismatchError

STORE_FORMAT = "nnmeter-nas-measurements"
STORE_VERSION = 1

# Settings that must match between a store and the backend resuming it.
_IDENTITY_KEYS = ("name", "library", "version", "provider", "intra_op_num_threads",
                  "inter_op_num_threads", "graph_optimization_level", "machine", "processor",
                  "isa", "clock", "feature_set", "flush_mb")
# What a store from before a key was recorded had (compared as such): timed warm.
_IDENTITY_DEFAULTS = {"flush_mb": 0.0}


class MeasurementStore:
    """Measurements of one build, in a JSONL file.

    Parameters
    ----------
    path:
        The ``.jsonl`` file (created with its parents when missing).
    header:
        Backend settings of this build; written as the first line of a new store and
        compared with the stored header on resume (see ``_IDENTITY_KEYS``).
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] = {}
        self._records: list[dict] = []
        self._keys: set[str] = set()
        self._torn = False
        if self.path.exists():
            self._load()
            if header is not None:
                self._check_header(header)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.header = {"type": "header", "format": STORE_FORMAT,
                           "format_version": STORE_VERSION, **dict(header or {})}
            self._write_line(self.header)

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        # A file that does not end in a newline has a torn last line (or is empty).
        self._torn = bool(data) and not data.endswith(b"\n")
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                if i == len(lines) - 1:
                    self._torn = True
                    continue
                raise ValueError(f"{self.path}: line {i + 1} is not valid JSON; the store is "
                                 "corrupt in the middle (only a torn last line is tolerated)")
            if obj.get("type") == "header":
                self.header = obj
                continue
            self._records.append(obj)
            if "key" in obj:
                self._keys.add(obj["key"])
        if self.header and self.header.get("format") != STORE_FORMAT:
            raise ValueError(f"{self.path}: not a measurement store "
                             f"(format {self.header.get('format')!r})")

    def _check_header(self, header: Mapping[str, Any]) -> None:
        diffs = {}
        for k in _IDENTITY_KEYS:
            if k not in header or (k not in self.header and k not in _IDENTITY_DEFAULTS):
                continue
            stored = self.header.get(k, _IDENTITY_DEFAULTS.get(k))
            if stored != header[k]:
                diffs[k] = (stored, header[k])
        if diffs:
            raise StoreMismatchError(
                f"{self.path} was measured with other settings: "
                + ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
                + ". Use another --work-dir, or the same settings, to resume.")

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    @property
    def keys(self) -> set[str]:
        return set(self._keys)

    def records(self, *, kind: str | None = None, **match: Any) -> list[dict]:
        """Records whose ``type`` is ``kind`` (default: kernel measurements) and whose fields
        equal ``match``."""
        kind = kind or "kernel"
        return [r for r in self._records if r.get("type", "kernel") == kind
                and all(r.get(k) == v for k, v in match.items())]

    # ------------------------------------------------------------------ writing
    def _write_line(self, obj: Mapping[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        with open(self.path, "ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())

    def _cut_torn_tail(self) -> None:
        with open(self.path, "rb+") as fh:
            data = fh.read()
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)
        self._torn = False

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (a kernel measurement unless ``record['type']`` says otherwise)
        and flush it to disk."""
        if self._torn:
            self._cut_torn_tail()
        rec = dict(record)
        rec.setdefault("type", "kernel")
        self._write_line(rec)
        self._records.append(rec)
        if "key" in rec:
            self._keys.add(rec["key"])
