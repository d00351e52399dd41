"""``torch_threads``: run torch on a given number of intra-op threads for a while.

Tracing and scoring run one small network at a time at batch 1 (mostly Python-side export
work), where extra OpenMP threads only spin and, on a busy machine, slow the pass down many
times over. The latency table builder, the profiler and the scoring workers share this one
context manager. torch is imported when it is entered, not when this module is imported.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, then restore the previous setting.

    Parameters
    ----------
    n : int, default=1
        Intra-op threads while the block runs.
    """
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
