"""Vectorised additive lookup tables: score many candidates at once with a few numpy gathers.

A :class:`CodeTable` holds, for several output columns at once (device latencies in ms, FLOPs,
parameters), the fixed part plus one row per value combination of each choice point::

    value[c, k] = fixed[k] + sum over points p of entries_p[combination of p in candidate c, k]

It is built from an :class:`~nnmeter_nas.nni.table.LatencyTable` (one column per device) or from
:func:`~nnmeter_nas.parallel.costs.build_cost_table` (``flops``, ``params``) and scores code
rows of :class:`~nnmeter_nas.parallel.codes.LabelSpace`. No torch import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .codes import LabelSpace, hashable_value

__all__ = ["CodeTable", "TablePart"]

_BLOCK = 8192


@dataclass
class TablePart:
    """One choice point: the indices of its labels in the label space and one row of output
    values per combination, ``values.shape == (prod(cardinalities of its labels), K)``; the
    combination index is the mixed-radix number of the labels' codes (last label fastest)."""

    name: str
    label_index: tuple[int, ...]
    values: np.ndarray


@dataclass
class CodeTable:
    """Fixed part + choice-point entries for ``columns`` (shape ``(K,)`` of names)."""

    space: LabelSpace
    columns: list[str]
    fixed: np.ndarray
    parts: list[TablePart]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fixed = np.asarray(self.fixed, dtype=np.float64).reshape(len(self.columns))
        self._compile()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_latency_table(cls, table: Any, space: LabelSpace | None = None) -> "CodeTable":
        """Columns = the table's devices (ms). ``table`` is a
        :class:`~nnmeter_nas.nni.table.LatencyTable`; ``space`` defaults to its labels."""
        if space is None:
            space = LabelSpace.from_label_values(table.space["labels"])
        fixed = [table.fixed_ms[d] for d in table.devices]
        points = [(p.name, p.labels, p.combos, p.ms) for p in table.points]
        return cls.from_points(space, list(table.devices), fixed, points,
                               meta={"source": "LatencyTable", **dict(table.meta)})

    @classmethod
    def from_points(cls, space: LabelSpace, columns: Sequence[str], fixed: Sequence[float],
                    points: Iterable[tuple[str, Sequence[str], Sequence[tuple],
                                           Sequence[Sequence[float]]]],
                    meta: dict | None = None) -> "CodeTable":
        """Build from ``(name, labels, combos, rows)`` per point, where ``rows[k]`` holds the
        ``K`` output values of ``combos[k]`` (a tuple of label values)."""
        label_pos = {label: j for j, label in enumerate(space.labels)}
        maps = space._index_maps()
        card = space.cardinalities
        parts = []
        for name, labels, combos, rows in points:
            try:
                idx = tuple(label_pos[label] for label in labels)
            except KeyError as exc:
                raise ValueError(f"choice point {name!r} uses label {exc.args[0]!r}, which the "
                                 f"label space {list(space.labels)} does not have") from None
            dims = tuple(int(card[j]) for j in idx)
            values = np.full((int(np.prod(dims, dtype=np.int64)), len(columns)), np.nan)
            for combo, row in zip(combos, rows):
                try:
                    pos = tuple(maps[j][hashable_value(v)] for j, v in zip(idx, combo))
                except KeyError:
                    raise ValueError(f"choice point {name!r} has an entry {combo} with a value "
                                     "the label space does not have") from None
                flat = int(np.ravel_multi_index(pos, dims)) if dims else 0
                values[flat] = row
            if np.isnan(values).any():
                raise ValueError(f"choice point {name!r} lacks entries for some combinations "
                                 f"of {list(labels)}")
            parts.append(TablePart(name, idx, values))
        return cls(space, list(columns), np.asarray(fixed, dtype=np.float64), parts,
                   dict(meta or {}))

    @classmethod
    def concat(cls, tables: Sequence["CodeTable"]) -> "CodeTable":
        """One table with the columns of all ``tables`` (same label space, same choice points)."""
        if not tables:
            raise ValueError("nothing to concatenate")
        first = tables[0]
        for t in tables[1:]:
            if t.space != first.space:
                raise ValueError("cannot join tables of different label spaces")
            if [(p.name, p.label_index) for p in t.parts] != \
                    [(p.name, p.label_index) for p in first.parts]:
                raise ValueError("cannot join tables with different choice points")
        columns = [c for t in tables for c in t.columns]
        if len(set(columns)) != len(columns):
            raise ValueError(f"duplicate columns when joining tables: {columns}")
        parts = [TablePart(p.name, p.label_index,
                           np.concatenate([t.parts[i].values for t in tables], axis=1))
                 for i, p in enumerate(first.parts)]
        meta = {c: t.meta for t in tables for c in t.columns}
        return cls(first.space, columns, np.concatenate([t.fixed for t in tables]), parts,
                   {"columns": meta})

    def select(self, columns: Sequence[str]) -> "CodeTable":
        """A table with only ``columns`` (in that order)."""
        pos = [self.columns.index(c) for c in columns]
        return CodeTable(self.space, list(columns), self.fixed[pos],
                         [TablePart(p.name, p.label_index, p.values[:, pos]) for p in self.parts],
                         dict(self.meta))

    # ------------------------------------------------------------------ scoring
    def _compile(self) -> None:
        """Per part: the label columns it reads, mixed-radix strides and one contiguous vector
        of entries per output column (gathers from small contiguous vectors are fastest)."""
        card = self.space.cardinalities
        self._plan = []
        for p in self.parts:
            dims = [int(card[j]) for j in p.label_index]
            strides = [1] * len(dims)
            for i in range(len(dims) - 2, -1, -1):
                strides[i] = strides[i + 1] * dims[i + 1]
            cols = [np.ascontiguousarray(p.values[:, k]) for k in range(len(self.columns))]
            self._plan.append((list(p.label_index), strides, cols))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_plan", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compile()

    def evaluate(self, codes: np.ndarray) -> np.ndarray:
        """Output values of each candidate, ``(n, K)`` float64 (ms / FLOPs / params).

        ``codes``: ``(n, L)`` integer codes (column-major arrays are fastest). The sum runs in
        a fixed order (fixed part, then the parts in table order), so equal inputs give
        bit-identical outputs wherever they are evaluated.
        """
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.space.labels):
            raise ValueError(f"codes must have shape (n, {len(self.space.labels)}), got "
                             f"{codes.shape}")
        n = len(codes)
        out = np.empty((len(self.columns), n), dtype=np.float64)
        # Blocks of a few thousand rows keep the temporaries in cache and below malloc's mmap
        # threshold (a 64k-row block runs about 5x slower per row than an 8k-row one).
        for start in range(0, n, _BLOCK):
            self._evaluate_block(codes[start:start + _BLOCK], out[:, start:start + _BLOCK])
        return out.T

    def _evaluate_block(self, codes: np.ndarray, out: np.ndarray) -> None:
        n = len(codes)
        for k in range(len(self.columns)):
            out[k] = self.fixed[k]
        for label_index, strides, cols in self._plan:
            if len(label_index) == 1:
                idx = codes[:, label_index[0]]
            elif not label_index:
                idx = np.zeros(n, dtype=np.intp)
            else:
                idx = np.zeros(n, dtype=np.int64)
                for j, s in zip(label_index, strides):
                    idx += codes[:, j].astype(np.int64) * s
            for k, col in enumerate(cols):
                out[k] += np.take(col, idx)

    def evaluate_samples(self, samples: Sequence[dict]) -> np.ndarray:
        return self.evaluate(self.space.encode(samples))
