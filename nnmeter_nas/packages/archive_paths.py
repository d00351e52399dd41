"""Member names of zip archives that stay inside the archive's folder (no zip slip).

Shared by the package reader (:mod:`.format`) and the nn-Meter importer (:mod:`.nnmeter_import`).
"""
from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["safe_member"]


def safe_member(name: str) -> PurePosixPath | None:
    """``name`` as a relative POSIX path, or None when it would leave the folder.

    Parameters
    ----------
    name : str
        A zip member name or a file name relative to a package root (``\\`` read as ``/``).

    Returns
    -------
    PurePosixPath or None
        None for an empty, absolute, drive-prefixed (``C:``) or ``..``-containing name.

    Examples
    --------
    >>> safe_member("pkg/kernels/conv.npz")
    PurePosixPath('pkg/kernels/conv.npz')
    >>> safe_member("../etc/passwd") is None
    True
    """
    p = PurePosixPath(name.replace("\\", "/"))
    if not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        return None
    return p
