"""The predictor package format: a directory (or a zip of one) that loads without pickle.

Layout::

    manifest.json          name, version, device, framework, feature set, kernel types...
    fusion_rules.json      nn-Meter's fusion rules format
    kernels/<regressor>.npz  one regressor per kernel type: a TreeEnsemble (regressors.forest)
                           or a KernelCostModel (regressors.cost_model); the file's header
                           names its format and the manifest entry its ``kind``
    kernels-cold/<regressor>.npz  optional (format 2): the same timed with cold caches

``manifest.json`` holds::

    {"format": "nnmeter-nas-predictor", "format_version": 1,
     "name": ..., "version": ..., "device": ..., "framework": ..., "description": ...,
     "feature_set": "nnmeter-2.0" | "nnmeter-nas-1" | "nnmeter-nas-2" | "nnmeter-nas-3",
     "units": {"latency": "ms", "flops": "FLOPs/2e6 as nn-Meter", "params": "params/1e6"},
     "kernels": {<regressor>: {"file": "kernels/<regressor>.npz",
                               "feature_names": [...],
                               "feature_range": {"min": [...], "max": [...]} | null,
                               "n_train": int | null, "validation": {...} | null}},
     "free_kernel_types": [...],   # kernel types declared to cost 0 ms (layout-only ops)
     "cold_kernels": {<regressor>: {...as "kernels", files under kernels-cold/}},  # format 2
     "cache_model": {"midpoint_mib": ..., "slope": ..., "scale": ..., "per_kernel_ms": ...},
     "source": {...},              # how it was made (import, builder, fit), free form
     "files": {<relative path>: <sha256>},  # every other file of the package
     "sizes": {<relative path>: <bytes>}}   # their sizes (optional; written since issue 16)

Loading verifies every checksum and refuses zip entries that escape the package folder. Before
any zip member is decompressed, its declared size is checked against the manifest's ``sizes``
and against caps (:data:`MAX_MEMBER_BYTES`, :data:`MAX_PACKAGE_BYTES`, and a compression ratio
no real package reaches), so a small archive cannot inflate into gigabytes of memory.
Format 2 adds the cold-cache regressors and the :class:`~nnmeter_nas.cache_model.CacheModel`
that mixes them with the warm ones; packages without them are still written as format 1.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import PackageError, PackageTooLargeError
from ..kernels.fusion_rules import FusionRules
from ..regressors import load_regressor, regressor_kind
from ..regressors.forest import TreeEnsemble
from .archive_paths import is_symlink, safe_member

if TYPE_CHECKING:
    from ..cache_model import CacheModel

FORMAT = "nnmeter-nas-predictor"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FUSION_RULES = "fusion_rules.json"
UNITS = {"latency": "ms", "flops": "FLOPs / 2e6 (as nn-Meter)", "params": "parameters / 1e6"}

# Size caps checked before a member is read. The built-in packages' kernel files are under
# 0.4 MB each; 1 GiB leaves room for far larger forests. Kernel .npz files are compressed
# already, so a package zip barely compresses them: a member that inflates over 100x past
# 16 MiB is a zip bomb, not a predictor.
MAX_MANIFEST_BYTES = 64 << 20
MAX_MEMBER_BYTES = 1 << 30
MAX_PACKAGE_BYTES = 4 << 30
_MAX_RATIO = 100
_RATIO_FLOOR_BYTES = 16 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_safe_member = safe_member  # zip-slip check shared with the nn-Meter importer


class _Source:
    """Read access to a package directory or zip archive (files relative to the package root)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_dir():
            if not (path / MANIFEST).is_file():
                raise PackageError(f"{path}: no {MANIFEST} in the folder; is it a predictor "
                                   "package? (nn-Meter's own releases are imported with "
                                   "`nnmeter-nas predictors import`)")
            return
        if not path.is_file():
            raise PackageError(f"predictor package not found: {path}")
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise PackageError(f"{path}: not a predictor package (neither a directory nor a "
                               f"valid zip file): {exc}") from exc
        names = self._zip.namelist()
        for n in names:
            if _safe_member(n) is None:
                raise PackageError(f"{path}: zip entry {n!r} escapes the package folder; "
                                   "refusing to read this archive")
        for info in self._zip.infolist():
            if is_symlink(info):
                raise PackageError(f"{path}: zip entry {info.filename!r} is a symbolic link; "
                                   "a predictor package holds plain files only, refusing to "
                                   "read this archive")
        manifests = sorted((n for n in names if PurePosixPath(n).name == MANIFEST),
                           key=lambda n: n.count("/"))
        if not manifests:
            raise PackageError(f"{path}: no {MANIFEST} in the archive; is it a predictor "
                               "package? (nn-Meter's own zips are imported with "
                               "`nnmeter-nas predictors import`)")
        self._prefix = manifests[0][: -len(MANIFEST)]

    def size(self, rel: str) -> int | None:
        """Size ``rel`` will have once read (a zip member's declared uncompressed size),
        checked against the caps and the compression ratio; None if there is no such file."""
        if _safe_member(rel) is None:
            raise PackageError(f"{self.path}: file name {rel!r} escapes the package folder")
        if self._zip is None:
            try:
                return (self.path / rel).stat().st_size
            except OSError:
                return None
        try:
            info = self._zip.getinfo(self._prefix + rel)
        except KeyError:
            return None
        if info.file_size > _RATIO_FLOOR_BYTES and \
                info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise PackageTooLargeError(
                f"{self.path}: the archive entry {rel!r} would inflate from "
                f"{info.compress_size} to {info.file_size} bytes, a ratio no predictor "
                "package has (a zip bomb?); refusing to read it. Get the package from its "
                "source again")
        return info.file_size

    def read(self, rel: str, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
        n = self.size(rel)  # checked before anything is decompressed
        if n is not None and n > max_bytes:
            raise PackageTooLargeError(f"{self.path}: {rel!r} is {n} bytes, over the "
                                       f"{max_bytes} bytes a package file may have; refusing "
                                       "to read it. Get the package from its source again")
        try:
            if self._zip is not None:
                return self._zip.read(self._prefix + rel)
            return (self.path / rel).read_bytes()
        except (KeyError, FileNotFoundError):
            raise PackageError(f"{self.path}: the package is missing the file {rel!r}; "
                               "reinstall it") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise PackageError(f"{self.path}: the archive entry {rel!r} is corrupt ({exc}); "
                               "reinstall the package") from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@dataclass
class PredictorPackage:
    """A loaded, verified predictor package."""

    path: Path
    manifest: dict
    fusion_rules: FusionRules
    regressors: dict[str, TreeEnsemble] = field(default_factory=dict)
    cold_regressors: dict[str, TreeEnsemble] = field(default_factory=dict)

    @property
    def cache_model(self) -> "CacheModel | None":
        """How warm and cold kernel latencies mix in a network (None: warm only)."""
        from ..cache_model import CacheModel

        raw = self.manifest.get("cache_model")
        if not raw or not self.cold_regressors:
            return None
        return CacheModel.from_dict(raw)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def device(self) -> str:
        return self.manifest.get("device", self.name)

    @property
    def feature_set(self) -> str:
        return self.manifest.get("feature_set", "nnmeter-nas-1")

    @property
    def free_kernel_types(self) -> frozenset[str]:
        return frozenset(self.manifest.get("free_kernel_types", []))

    def feature_range(self, regressor: str) -> tuple[np.ndarray, np.ndarray] | None:
        info = self.manifest["kernels"].get(regressor, {})
        rng = info.get("feature_range")
        if not rng:
            return None
        return np.asarray(rng["min"], dtype=float), np.asarray(rng["max"], dtype=float)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "PredictorPackage":
        """Load a package directory or zip; every file's sha256 is checked (``verify``)."""
        path = Path(path)
        src = _Source(path)
        try:
            raw = src.read(MANIFEST, MAX_MANIFEST_BYTES)
            try:
                manifest = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise PackageError(f"{path}: {MANIFEST} is not valid JSON: {exc}") from exc
            if not isinstance(manifest, dict):
                raise PackageError(f"{path}: {MANIFEST} must hold a JSON object")
            if manifest.get("format") != FORMAT:
                raise PackageError(f"{path}: {MANIFEST} is not a {FORMAT} manifest "
                                   f"(format={manifest.get('format')!r})")
            if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
                raise PackageError(f"{path}: package format version "
                                   f"{manifest['format_version']} is newer than this "
                                   f"nnmeter_nas supports ({FORMAT_VERSION}); upgrade nnmeter-nas")
            for key in ("name", "version", "kernels", "files"):
                if key not in manifest:
                    raise PackageError(f"{path}: {MANIFEST} lacks the {key!r} entry")
            files = manifest["files"]
            if not isinstance(files, dict) or not isinstance(manifest["kernels"], dict):
                raise PackageError(f"{path}: {MANIFEST}'s 'files' and 'kernels' entries must "
                                   "be JSON objects")
            _check_sizes(src, path, files, manifest.get("sizes"))
            blobs: dict[str, bytes] = {}
            for rel, digest in files.items():
                data = src.read(rel)
                if verify and sha256_bytes(data) != digest:
                    raise PackageError(f"{path}: checksum mismatch for {rel!r} (file corrupt "
                                       "or modified); reinstall the package")
                blobs[rel] = data
            if FUSION_RULES not in blobs:
                raise PackageError(f"{path}: {MANIFEST} does not list {FUSION_RULES}")
            try:
                rules = FusionRules.from_dict(json.loads(blobs[FUSION_RULES]))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise PackageError(f"{path}: {FUSION_RULES} is not valid JSON: {exc}") from exc
            except (TypeError, AttributeError) as exc:
                raise PackageError(f"{path}: {FUSION_RULES} is not a fusion rules mapping "
                                   f"(rule name -> {{\"obey\": ...}}): {exc}") from exc
            regressors = _load_regressors(path, manifest["kernels"], blobs)
            cold = manifest.get("cold_kernels") or {}
            if not isinstance(cold, dict):
                raise PackageError(f"{path}: {MANIFEST}'s 'cold_kernels' must be a JSON object")
            cold_regressors = _load_regressors(path, cold, blobs)
            if cold_regressors and not manifest.get("cache_model"):
                raise PackageError(f"{path}: {MANIFEST} has cold_kernels but no cache_model "
                                   "to mix them with; rebuild or re-fit the package")
        finally:
            src.close()
        return cls(path=path, manifest=manifest, fusion_rules=rules, regressors=regressors,
                   cold_regressors=cold_regressors)


def _check_sizes(src: _Source, path: Path, files: Mapping[str, Any], sizes: Any) -> None:
    """Refuse, before any member is decompressed, a file whose declared size disagrees with
    the manifest's ``sizes`` or whose files together exceed :data:`MAX_PACKAGE_BYTES`."""
    if sizes is not None and not isinstance(sizes, dict):
        raise PackageError(f"{path}: {MANIFEST}'s 'sizes' must be a JSON object "
                           "{file: bytes}")
    total = 0
    for rel in files:
        n = src.size(rel)
        if n is None:
            continue  # reported as a missing file when read
        want = (sizes or {}).get(rel)
        if want is not None and n != want:
            raise PackageTooLargeError(f"{path}: {rel!r} holds {n} bytes but {MANIFEST} says "
                                       f"{want}; the package is corrupt or was tampered with: "
                                       "get it from its source again")
        total += n
        if total > MAX_PACKAGE_BYTES:
            raise PackageTooLargeError(f"{path}: the files {MANIFEST} lists add up to more "
                                       f"than {MAX_PACKAGE_BYTES} bytes; refusing to read "
                                       "them. Get the package from its source again")


def _load_regressors(path: Path, kernels: Mapping[str, Any], blobs: Mapping[str, bytes]
                     ) -> dict[str, TreeEnsemble]:
    regressors = {}
    for reg, info in kernels.items():
        rel = info.get("file") if isinstance(info, dict) else None
        if rel not in blobs:
            raise PackageError(f"{path}: kernel {reg!r} refers to {rel!r}, which is "
                               "not listed in the manifest's files")
        try:
            regressors[reg] = load_regressor(blobs[rel])
        except ValueError as exc:
            raise PackageError(f"{path}: {rel}: {exc}") from exc
        names = info.get("feature_names")
        if names and len(names) != regressors[reg].n_features:
            raise PackageError(f"{path}: kernel {reg!r} lists {len(names)} feature "
                               f"names but its regressor takes "
                               f"{regressors[reg].n_features} features")
    return regressors


def feature_range_of(X: np.ndarray) -> dict[str, list[float]]:
    X = np.asarray(X, dtype=float)
    return {"min": X.min(axis=0).tolist(), "max": X.max(axis=0).tolist()}


def write_package(dest: str | Path, *, name: str, version: str, device: str, framework: str,
                  regressors: Mapping[str, TreeEnsemble], fusion_rules: FusionRules | Mapping,
                  feature_set: str = "nnmeter-nas-1", description: str = "",
                  kernel_info: Mapping[str, Mapping[str, Any]] | None = None,
                  free_kernel_types: list[str] | tuple[str, ...] = (),
                  source: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None, overwrite: bool = False,
                  cold_regressors: Mapping[str, TreeEnsemble] | None = None,
                  cold_kernel_info: Mapping[str, Mapping[str, Any]] | None = None,
                  cache_model: "CacheModel | None" = None) -> Path:
    """Write a package directory atomically (to a temporary sibling, then renamed).

    ``kernel_info[regressor]`` may give ``feature_names``, ``feature_range`` (``{"min": [...],
    "max": [...]}``, the range of the training features), ``n_train`` and ``validation``.
    ``cold_regressors`` (with their ``cold_kernel_info``) are the same kernel types timed
    with cold caches, mixed with the warm ones by ``cache_model`` (format 2).
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise PackageError(f"{dest} already exists; pass overwrite=True to replace it")
    check_replaceable(dest)
    if bool(cold_regressors) != (cache_model is not None):
        raise ValueError("cold_regressors and cache_model go together")
    rules = fusion_rules if isinstance(fusion_rules, FusionRules) else \
        FusionRules.from_dict(fusion_rules)
    blobs: dict[str, bytes] = {FUSION_RULES: json.dumps(rules.to_dict(), indent=1,
                                                        sort_keys=True).encode()}
    kernels = _kernel_entries("kernels", regressors, kernel_info, feature_set, blobs)
    cold = _kernel_entries("kernels-cold", cold_regressors or {}, cold_kernel_info,
                           feature_set, blobs)
    manifest = {"format": FORMAT, "format_version": 2 if cold else 1, "name": name,
                "version": str(version), "device": device, "framework": framework,
                "description": description, "feature_set": feature_set, "units": UNITS,
                "kernels": kernels, "free_kernel_types": sorted(free_kernel_types),
                "source": dict(source or {}),
                "files": {rel: sha256_bytes(b) for rel, b in sorted(blobs.items())},
                "sizes": {rel: len(b) for rel, b in sorted(blobs.items())}}
    if cold:
        manifest["cold_kernels"] = cold
        manifest["cache_model"] = cache_model.to_dict()
    manifest.update(dict(extra or {}))
    tmp = _make_sibling_dir(dest, "tmp")
    try:
        for rel, data in blobs.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if dest.exists():
            # A unique name: two writers in one process must not share it.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / "pkg")
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old / "pkg", dest)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def check_replaceable(dest: str | Path) -> None:
    """Raise :class:`~nnmeter_nas.errors.PackageError` unless ``dest`` may be replaced by a
    package: it does not exist, is an empty folder, or is a package folder (holds
    ``manifest.json``). Replacing anything else would delete a user's own files (``--out
    results --overwrite``, ``--out measured.csv --overwrite``)."""
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_dir() and not dest.is_symlink():
        if (dest / MANIFEST).is_file():
            return
        held = sorted(p.name for p in dest.iterdir())
        if not held:
            return
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise PackageError(f"{dest} is not a predictor package (it has no {MANIFEST}; it "
                           f"holds {shown}): refusing to replace it; choose a new or empty "
                           "folder, or a package folder, as the destination")
    raise PackageError(f"{dest} is not a predictor package (it is a file, not a folder): "
                       "refusing to replace it; choose a new or empty folder, or a package "
                       "folder, as the destination")


def check_writable(dest: str | Path) -> None:
    """Raise :class:`~nnmeter_nas.errors.PackageError` when a package cannot be written to
    ``dest`` (its parent cannot be created or written: a path under a file, a read-only
    folder), as :func:`write_package` would, but before the work that makes the package."""
    probe = _make_sibling_dir(Path(dest), "probe")
    probe.rmdir()


def ensure_writable_dir(path: str | Path) -> Path:
    """Create the folder ``path`` (and its parents) if need be and check that it can be
    written; :class:`OSError` otherwise (its text: :func:`os_error_text`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", str(path))
    return path


def os_error_text(exc: OSError) -> str:
    """An OS error's reason and the file it names, for a message: ``Permission denied (F)``."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}"


def _make_sibling_dir(dest: Path, kind: str) -> Path:
    """A new, uniquely named folder ``.NAME.KIND-XXXXXXXX`` beside ``dest`` (created with the
    process's umask, unlike :func:`tempfile.mkdtemp`'s 0700, since it becomes the package);
    a parent that cannot be created or written is named in a PackageError."""
    import secrets

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            tmp = dest.parent / f".{dest.name}.{kind}-{secrets.token_hex(4)}"
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            return tmp
        raise FileExistsError(f"no free temporary name beside {dest}")
    except OSError as exc:
        raise PackageError(f"cannot write the package to {dest}: {os_error_text(exc)}; "
                           "choose a folder you can write to") from exc


def _kernel_entries(folder: str, regressors: Mapping[str, TreeEnsemble],
                    kernel_info: Mapping[str, Mapping[str, Any]] | None, feature_set: str,
                    blobs: dict[str, bytes]) -> dict[str, dict]:
    """Manifest entries of ``regressors`` (their files added to ``blobs`` under ``folder``)."""
    from ..features.extract import feature_names

    kernels: dict[str, dict] = {}
    for reg, ens in sorted(regressors.items()):
        if not reg or "/" in reg or reg.startswith("."):
            raise PackageError(f"invalid kernel regressor name {reg!r}")
        rel = f"{folder}/{reg}.npz"
        blobs[rel] = ens.to_npz_bytes()
        info = dict((kernel_info or {}).get(reg, {}))
        names = list(info.get("feature_names") or feature_names(reg, feature_set))
        if len(names) != ens.n_features:
            names = [f"f{i}" for i in range(ens.n_features)]
        kernels[reg] = {"file": rel, "feature_names": names,
                        "feature_range": info.get("feature_range"),
                        "n_train": info.get("n_train"), "validation": info.get("validation"),
                        "kind": regressor_kind(ens)}
        if isinstance(ens, TreeEnsemble):
            kernels[reg]["n_trees"] = ens.n_trees
        for k, v in info.items():
            kernels[reg].setdefault(k, v)
    return kernels


def zip_package(src_dir: str | Path, dest_zip: str | Path) -> Path:
    """Zip a package directory (files at the archive root)."""
    src_dir, dest_zip = Path(src_dir), Path(dest_zip)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src_dir.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(src_dir).as_posix())
    tmp = dest_zip.with_name(dest_zip.name + ".part")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, dest_zip)
    return dest_zip
