"""Score rows: a chunk's candidates and scores as a DataFrame, and the progress bar that writes
finished chunks to the :class:`~.store.ResultStore` (beside it)."""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .codes import LabelSpace
from .plan import ScoringPlan
from .store import ResultStore

__all__ = ["latency_column", "kernels_column", "chunk_frame", "label_normaliser",
           "table_columns", "full_columns", "ProgressWriter"]


def latency_column(device: str) -> str:
    """Name of the latency column (ms) of ``device`` in score tables."""
    return f"{device}_ms"


def kernels_column(device: str) -> str:
    return f"{device}_kernels"


def chunk_frame(plan: ScoringPlan, chunk: int, codes: np.ndarray, columns: Mapping[str, Any]) -> Any:
    """One chunk as a DataFrame: index, one categorical column per label, then ``columns``."""
    import pandas as pd

    start, stop = plan.bounds(chunk)
    data: dict[str, Any] = {"index": np.arange(start, stop, dtype=np.int64)}
    for j, label in enumerate(plan.space.labels):
        data[label] = pd.Categorical.from_codes(codes[:, j].astype(np.int32),
                                                categories=plan.space.value_categories(j))
    data.update(columns)
    return pd.DataFrame(data)


def label_normaliser(space: LabelSpace) -> Callable[[Any], Any]:
    """Restore label columns as categoricals of the label's values (CSV parts read back as
    plain strings or numbers)."""
    import pandas as pd

    def normalise(df: Any) -> Any:
        for j, label in enumerate(space.labels):
            if label not in df.columns:
                continue
            cats = space.value_categories(j)
            col = df[label]
            if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == cats:
                continue
            by_text = {str(c): c for c in cats}
            df[label] = pd.Categorical(col.astype(str).map(by_text), categories=cats)
        df["index"] = df["index"].astype(np.int64)
        return df

    return normalise


def table_columns(values: np.ndarray, columns: Sequence[str], devices: Sequence[str]
                   ) -> dict[str, np.ndarray]:
    pos = {c: k for k, c in enumerate(columns)}
    out = {"flops": values[:, pos["flops"]], "params": values[:, pos["params"]]}
    for d in devices:
        out[latency_column(d)] = values[:, pos[d]]
    return out


def full_columns(result: Mapping[str, Any], devices: Sequence[str], kernels: bool
                  ) -> dict[str, Any]:
    out = {"flops": result["flops"], "params": result["params"]}
    for d in devices:
        out[latency_column(d)] = result[d]
    if kernels:
        for d in devices:
            out[kernels_column(d)] = result["kernels:" + d]
    return out


class ProgressWriter:
    """tqdm bar (rate and ETA) plus an optional callback; writes buffered chunks to the store."""

    def __init__(self, store: ResultStore, total: int, done: int, *, desc: str,
                 enabled: bool, on_progress: Callable[[int, int], Any] | None,
                 flush_seconds: float) -> None:
        self.store = store
        self.total = total
        self.done = done
        self.on_progress = on_progress
        self.flush_seconds = flush_seconds
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="cand",
                            unit_scale=True, dynamic_ncols=True, smoothing=0.1)

    def add(self, frame: Any) -> None:
        self._buffer.append(frame)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        n = len(frame)
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def flush(self) -> None:
        if self._buffer:
            self.store.write(self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
