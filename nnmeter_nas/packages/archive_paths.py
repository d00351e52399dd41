"""Member names of zip archives that stay inside the archive's folder (no zip slip).

Shared by the package reader (:mod:`.format`) and the nn-Meter importer (:mod:`.nnmeter_import`).
"""
from __future__ import annotations

import stat
import zipfile
from pathlib import PurePosixPath

__all__ = ["safe_member", "is_symlink"]


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


def is_symlink(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member is a symbolic link (Unix mode ``S_IFLNK`` in its external
    attributes). Python's ``zipfile`` reads one as a file holding the link's target, so a
    predictor archive, which holds plain files only, is refused rather than read that way.

    Examples
    --------
    >>> info = zipfile.ZipInfo("pkg/relu.pkl")
    >>> is_symlink(info)
    False
    >>> info.external_attr = (stat.S_IFLNK | 0o777) << 16
    >>> is_symlink(info)
    True
    """
    return stat.S_ISLNK(info.external_attr >> 16)
