"""Candidates as integer codes: one row per architecture, one column per label.

A sample ``{label: value}`` of a space with labels ``l_0 .. l_{L-1}`` is the row
``[index of value in values(l_0), ..., index of value in values(l_{L-1})]``. Codes make random
sampling, enumeration, table lookups and storage vectorised; :meth:`LabelSpace.decode` turns
rows back into NNI samples.

Random candidates of chunk ``c`` come from ``numpy.random.default_rng([seed, c])``, so a chunk's
candidates do not depend on which worker draws them, on the number of workers or on a resume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from ..errors import SampleError
from ..nni.sample_values import hashable_value

__all__ = ["LabelSpace", "hashable_value"]


def __getattr__(name: str) -> Any:
    if name == "SampleCodeError":  # merged into SampleError (same meaning)
        import warnings

        warnings.warn("nnmeter_nas.parallel.codes.SampleCodeError is deprecated; catch "
                      "nnmeter_nas.errors.SampleError", DeprecationWarning, stacklevel=2)
        return SampleError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class LabelSpace:
    """The labels of a search space and each label's values, in a fixed order.

    ``values[j]`` holds the values of ``labels[j]`` exactly as NNI samples hold them.
    """

    labels: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    @classmethod
    def from_label_values(cls, label_values: Mapping[str, Sequence[Any]]) -> "LabelSpace":
        labels = tuple(str(k) for k in label_values)
        values = tuple(tuple(v) for v in label_values.values())
        for label, vs in zip(labels, values):
            if not vs:
                raise ValueError(f"label {label!r} has no values")
        return cls(labels, values)

    # ------------------------------------------------------------------ sizes
    @property
    def cardinalities(self) -> np.ndarray:
        """Number of values of each label, shape ``(L,)``."""
        return np.array([len(v) for v in self.values], dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of distinct candidates (product of the cardinalities; may be huge)."""
        return math.prod(len(v) for v in self.values)

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned integer type holding every code."""
        top = max(len(v) for v in self.values) if self.values else 1
        return np.dtype(np.uint8 if top <= 256 else np.uint16 if top <= 65536 else np.uint32)

    def value_strings(self, j: int) -> list[str]:
        """The values of label ``j`` as strings."""
        return [v if isinstance(v, str) else str(v) for v in self.values[j]]

    def value_categories(self, j: int) -> list[Any]:
        """Categories of label ``j``'s column in result tables: the values themselves when
        they are scalars of one type (``"k3"``, ``3``), else their strings (lists)."""
        vs = self.values[j]
        kinds = {type(v) for v in vs}
        if len(kinds) == 1 and kinds <= {str, int, float, bool} and len(set(vs)) == len(vs):
            return list(vs)
        return self.value_strings(j)

    # ------------------------------------------------------------------ generation
    def random_codes(self, n: int, seed: int, chunk: int) -> np.ndarray:
        """``n`` uniformly random candidates (with replacement) of chunk ``chunk``, ``(n, L)``
        (column-major: each label's codes are contiguous)."""
        rng = np.random.default_rng([int(seed), int(chunk)])
        card = self.cardinalities
        out = np.empty((len(card), n), dtype=self.dtype)
        for j, c in enumerate(card):
            if c <= 256 and c & (c - 1) == 0:
                # Power-of-two cardinality: masking random bytes is exactly uniform and ~3x
                # faster than integers().
                out[j] = np.frombuffer(rng.bytes(n), dtype=np.uint8) & np.uint8(c - 1)
            else:
                out[j] = rng.integers(0, c, size=n, dtype=self.dtype)
        return out.T

    def enumerate_codes(self, start: int, stop: int) -> np.ndarray:
        """Candidates ``start .. stop-1`` of the whole space in mixed-radix order (last label
        fastest), shape ``(stop - start, L)``."""
        if stop > self.size:
            raise ValueError(f"the space has {self.size} candidates, asked for up to {stop}")
        idx = np.arange(start, stop, dtype=np.int64)
        card = self.cardinalities
        out = np.empty((len(card), len(idx)), dtype=self.dtype)
        for j in range(len(card) - 1, -1, -1):
            out[j] = idx % card[j]
            idx //= card[j]
        return out.T

    # ------------------------------------------------------------------ conversion
    def _index_maps(self) -> list[dict[Hashable, int]]:
        maps = self.__dict__.get("_maps")
        if maps is None:
            maps = [{hashable_value(v): i for i, v in enumerate(vs)} for vs in self.values]
            object.__setattr__(self, "_maps", maps)
        return maps

    def encode(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Codes of NNI samples, ``(len(samples), L)``. Raises
        :class:`~nnmeter_nas.errors.SampleError` naming the sample, label and value at fault."""
        maps = self._index_maps()
        out = np.empty((len(samples), len(self.labels)), dtype=self.dtype)
        label_set = set(self.labels)
        for i, sample in enumerate(samples):
            if len(sample) != len(self.labels) or any(k not in label_set for k in sample):
                missing = [k for k in self.labels if k not in sample]
                unknown = [k for k in sample if k not in label_set]
                raise SampleError(
                    f"sample {i} does not match the space: missing labels {missing}, unknown "
                    f"labels {unknown}; a sample needs exactly {list(self.labels)}")
            for j, label in enumerate(self.labels):
                try:
                    out[i, j] = maps[j][hashable_value(sample[label])]
                except (KeyError, TypeError):
                    raise SampleError(
                        f"sample {i} has {label}={sample[label]!r}, which is not a value of that "
                        f"label; the values are {list(self.values[j])}") from None
        return out

    def decode(self, codes: np.ndarray) -> list[dict[str, Any]]:
        """NNI samples ``{label: value}`` of code rows."""
        cols = [[vs[int(c)] for c in codes[:, j]] for j, vs in enumerate(self.values)]
        return [dict(zip(self.labels, row)) for row in zip(*cols)] if cols else \
            [{} for _ in range(len(codes))]

    def to_dict(self) -> dict[str, list]:
        """JSON-able ``{label: [values]}`` (tuples become lists)."""
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
        return {label: [plain(v) for v in vs] for label, vs in zip(self.labels, self.values)}
