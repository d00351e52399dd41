"""Which candidates make up a scoring job and how they are cut into chunks.

A chunk is the unit of work, of resume and of the random stream: the candidates of chunk ``c``
are a pure function of ``(seed, c)`` (or of the given samples), so a result does not depend on
where or in which order chunks run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .codes import LabelSpace

__all__ = ["ScoringPlan", "TABLE_CHUNK", "FULL_CHUNK"]

#: Candidates per chunk (unit of work, of resume and of the random stream).
TABLE_CHUNK = 65536
FULL_CHUNK = 8


@dataclass
class ScoringPlan:
    """Which candidates make up the job and how they are cut into chunks.

    ``source`` is ``"random"`` (``total`` uniform draws from ``(seed, chunk)`` streams),
    ``"all"`` (the whole space in mixed-radix order) or ``"samples"`` (given ``codes``).
    """

    space: LabelSpace
    source: str
    total: int
    chunk_size: int
    seed: int | None = None
    codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_chunks(self) -> int:
        return -(-self.total // self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.total)

    def chunk_codes(self, chunk: int) -> np.ndarray:
        start, stop = self.bounds(chunk)
        if self.source == "random":
            return self.space.random_codes(stop - start, self.seed or 0, chunk)
        if self.source == "all":
            return self.space.enumerate_codes(start, stop)
        assert self.codes is not None
        return self.codes[start:stop]

    def for_worker(self) -> "ScoringPlan":
        """A copy without the explicit codes (workers get their chunk's codes as arguments)."""
        return ScoringPlan(self.space, self.source, self.total, self.chunk_size, self.seed, None)
