"""Where predictors come from: built into nnmeter_nas, installed in the user cache, or
downloadable (nn-Meter's released predictors).

Resolution order for ``load_predictor(name)``: an installed package (the user's cache,
``$NNMETER_NAS_HOME`` or ``~/.cache/nnmeter_nas``) wins over a built-in one of the same name;
with neither, a downloadable predictor is downloaded, verified, imported and installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import DownloadError, PackageError, PackageWarning, UnknownPredictorError
from ..warn import warn
from .format import MANIFEST, PredictorPackage, ensure_writable_dir, os_error_text

NNMETER_RELEASE_BASE = "https://github.com/microsoft/nn-Meter/releases/download/v1.0-data/"

# nn-Meter's four released predictors (name, version 1.0), as its predictors.yaml lists them.
NNMETER_PREDICTORS: dict[str, dict[str, Any]] = {
    "cortexA76cpu_tflite21": {
        "hardware": "Pixel4, CortexA76 CPU", "framework": "TFLite 2.1",
        "kernels": ["conv-bn-relu", "dwconv-bn-relu", "fc", "global-avgpool", "hswish", "relu",
                    "se", "split", "add", "addrelu", "maxpool", "avgpool", "bn", "bnrelu",
                    "channelshuffle", "concat"]},
    "adreno640gpu_tflite21": {
        "hardware": "Mi9, Adreno 640 GPU", "framework": "TFLite 2.1",
        "kernels": ["conv-bn-relu", "dwconv-bn-relu", "hswish", "relu", "se", "maxpool",
                    "avgpool", "bn", "bnrelu", "concat"]},
    "adreno630gpu_tflite21": {
        "hardware": "Pixel3XL, Adreno 630 GPU", "framework": "TFLite 2.1",
        "kernels": ["conv-bn-relu", "dwconv-bn-relu", "hswish", "relu", "se", "maxpool",
                    "avgpool", "bn", "bnrelu", "concat"]},
    "myriadvpu_openvino2019r2": {
        "hardware": "Intel Movidius NCS2, Myriad VPU", "framework": "OpenVINO 2019R2",
        "kernels": ["conv-bn-relu", "dwconv-bn-relu", "fc", "hswish", "relu", "se", "addrelu",
                    "maxpool", "avgpool", "bn", "bnrelu", "channelshuffle"]},
}
NNMETER_VERSION = "1.0"
NNMETER_DEVICES = tuple(NNMETER_PREDICTORS)


def nnmeter_url(name: str) -> str:
    """Download URL of an nn-Meter predictor; ``$NNMETER_NAS_MIRROR`` replaces the base URL."""
    base = os.environ.get("NNMETER_NAS_MIRROR") or NNMETER_RELEASE_BASE
    return base.rstrip("/") + "/" + f"{name}.zip"


def home_dir() -> Path:
    """The user cache: ``$NNMETER_NAS_HOME`` or ``~/.cache/nnmeter_nas``."""
    env = os.environ.get("NNMETER_NAS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nnmeter_nas"


def installed_dir() -> Path:
    return home_dir() / "predictors"


def writable_installed_dir() -> Path:
    """:func:`installed_dir`, created if need be; a PackageError names it (and
    ``NNMETER_NAS_HOME``) when it cannot be created or written."""
    root = installed_dir()
    try:
        return ensure_writable_dir(root)
    except OSError as exc:
        raise PackageError(f"cannot install predictors into {root}: {os_error_text(exc)};"
                           " set NNMETER_NAS_HOME to a folder you can write to (or write the "
                           "package elsewhere with --out)") from None


def builtin_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "predictors"


@dataclass
class PredictorInfo:
    """One row of :func:`list_predictors`."""

    name: str
    version: str
    device: str
    source: str          # "installed", "builtin" or "downloadable"
    status: str          # "in use", "shadowed" (another source wins) or "not installed"
    path: str | None
    url: str | None = None
    description: str = ""
    calibrations: list[str] = field(default_factory=list)  # per-space, see calibration.py

    def as_dict(self) -> dict:
        return asdict(self)



def _read_manifest_why(path: Path) -> tuple[dict | None, str]:
    """``(manifest, "")``, or ``(None, why it cannot be used)``."""
    try:
        m = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST} cannot be read: {exc}"
    if not isinstance(m, dict) or "name" not in m:
        return None, f"{MANIFEST} has no 'name' entry"
    return m, ""


def _scan(root: Path, source: str) -> list[PredictorInfo]:
    out: list[PredictorInfo] = []
    if not root.is_dir():
        return out
    for manifest_path in sorted(root.glob(f"**/{MANIFEST}")):
        pkg = manifest_path.parent
        if any(part.startswith(".") for part in pkg.relative_to(root).parts):
            continue  # temporary or old directories of an install in progress
        m, why = _read_manifest_why(pkg)
        if m is None:
            if source == "installed":
                warn(f"{pkg}: installed predictor package skipped ({why}), so its "
                     "name loads another package (built-in or downloadable); "
                     "reinstall it or remove the folder", PackageWarning)
            continue
        out.append(PredictorInfo(name=m["name"], version=str(m.get("version", "")),
                                 device=m.get("device", m["name"]), source=source,
                                 status="", path=str(pkg),
                                 description=m.get("description", ""),
                                 calibrations=sorted(m.get("calibrations") or {})))
    return out


def _version_key(v: str) -> tuple:
    parts = []
    for p in str(v).replace("-", ".").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


def list_predictors() -> list[PredictorInfo]:
    """Every predictor known here: installed, built-in and downloadable.

    Returns
    -------
    list of PredictorInfo
        One row per (name, version, source), sorted by name; for each name the package
        :func:`load_predictor` would use has ``status == "in use"`` (others are
        ``"shadowed"`` or ``"not installed"``).

    Examples
    --------
    >>> from nnmeter_nas import list_predictors
    >>> rows = [r for r in list_predictors() if r.status == "in use"]
    >>> "cortexA76cpu_tflite21" in {r.name for r in rows}
    True
    >>> {"builtin", "downloadable"} <= {r.source for r in list_predictors()}
    True
    """
    rows = _scan(installed_dir(), "installed") + _scan(builtin_dir(), "builtin")
    have = {(r.name, r.version) for r in rows}
    for name, info in NNMETER_PREDICTORS.items():
        if (name, NNMETER_VERSION) not in have:
            rows.append(PredictorInfo(name=name, version=NNMETER_VERSION, device=name,
                                      source="downloadable", status="not installed", path=None,
                                      url=nnmeter_url(name),
                                      description=f"nn-Meter {info['hardware']}, "
                                                  f"{info['framework']}"))
    for name in {r.name for r in rows}:
        chosen = _choose([r for r in rows if r.name == name and r.path], None)
        for r in rows:
            if r.name == name and r.path:
                r.status = "in use" if r is chosen else "shadowed"
    order = {"installed": 0, "builtin": 1, "downloadable": 2}
    return sorted(rows, key=lambda r: (r.name, order[r.source], _version_key(r.version)))


def _choose(rows: list[PredictorInfo], version: str | None) -> PredictorInfo | None:
    if version is not None:
        rows = [r for r in rows if r.version == str(version)]
    if not rows:
        return None
    order = {"installed": 0, "builtin": 1}
    # Installed beats built-in; within a source the newest version wins.
    best_source = min(order[r.source] for r in rows)
    rows = [r for r in rows if order[r.source] == best_source]
    return max(rows, key=lambda r: _version_key(r.version))


def load_predictor(name: str | None = None, version: str | None = None, *,
                   path: str | Path | None = None, strict: bool = False,
                   download: bool = True, calibration: str | None = None
                   ) -> "LatencyPredictor":
    """Load a latency predictor by name (and optionally version), or from ``path``.

    An installed package wins over a built-in one; an nn-Meter device that is neither is
    downloaded (``download=True``), verified, imported and installed into the user cache.

    Parameters
    ----------
    name : str, default=None
        Predictor name, e.g. ``"cortexA76cpu_tflite21"`` (see :func:`list_predictors`).
    version : str, default=None
        A version of that name; None takes the newest.
    path : str or path, default=None
        A package directory or ``.zip`` to load instead of a name.
    strict : bool, default=False
        See :class:`~nnmeter_nas.LatencyPredictor`.
    download : bool, default=True
        Download an nn-Meter predictor that is not installed (else raise).
    calibration : str, default=None
        One of the package's per-space calibrations (see :mod:`nnmeter_nas.calibration`).

    Returns
    -------
    LatencyPredictor

    Raises
    ------
    UnknownPredictorError
        For an unknown name or version (the message lists the known ones and the closest
        names).

    Examples
    --------
    >>> from nnmeter_nas import load_predictor
    >>> predictor = load_predictor("cortexA76cpu_tflite21")
    >>> predictor.device
    'cortexA76cpu_tflite21'
    >>> load_predictor("a76")
    Traceback (most recent call last):
    ...
    nnmeter_nas.errors.UnknownPredictorError: unknown predictor 'a76'; did you mean ...
    """
    from ..predictor import LatencyPredictor

    if path is not None:
        return LatencyPredictor(PredictorPackage.load(path), strict=strict,
                                calibration=calibration)
    if not name:
        raise UnknownPredictorError("load_predictor needs a predictor name or path=...; "
                                    f"known names: {sorted({r.name for r in list_predictors()})}")
    version = None if version is None else str(version)
    rows = [r for r in _scan(installed_dir(), "installed") + _scan(builtin_dir(), "builtin")
            if r.name == name]
    chosen = _choose(rows, version)
    if chosen is not None:
        return LatencyPredictor(PredictorPackage.load(chosen.path), strict=strict,
                                calibration=calibration)
    if name in NNMETER_PREDICTORS and version in (None, NNMETER_VERSION):
        if not download:
            raise UnknownPredictorError(f"predictor {name!r} is not installed; install it with "
                                        f"`nnmeter-nas predictors install {name}` or from a "
                                        "file with `nnmeter-nas predictors install PATH.zip`")
        dest = install_predictor(nnmeter_url(name), name=name, version=NNMETER_VERSION,
                                 overwrite=False)
        return LatencyPredictor(PredictorPackage.load(dest), strict=strict,
                                calibration=calibration)
    known = sorted({r.name for r in list_predictors()})
    if rows or name in NNMETER_PREDICTORS:
        have = sorted({r.version for r in rows} | ({NNMETER_VERSION} if name in
                                                   NNMETER_PREDICTORS else set()))
        raise UnknownPredictorError(f"predictor {name!r} has no version {version!r}; "
                                    f"available versions: {have}")
    raise UnknownPredictorError(f"unknown predictor {name!r};{did_you_mean(name, known)} "
                                f"known predictors: {known} (see `nnmeter-nas predictors list` "
                                "or nnmeter_nas.list_predictors())")


def load_predictor_spec(spec: str, *, strict: bool = False, download: bool = False
                        ) -> "LatencyPredictor":
    """Load a predictor from a device spec as the CLI, ``parallel.score`` and the NNI adapters
    take them: a predictor name or a package path, optionally followed by ``@CALIBRATION`` (one
    of the package's per-space calibrations: ``x86avx512cpu_onnxruntime@spos``)."""
    spec = str(spec).strip()
    cal = None
    if "@" in spec and not Path(spec).exists():
        spec, cal = spec.rsplit("@", 1)
        if not spec or not cal:
            raise UnknownPredictorError(f"device spec {spec + '@' + cal!r}: write "
                                        "NAME@CALIBRATION or PATH@CALIBRATION")
    if Path(spec).exists():
        return load_predictor(path=spec, strict=strict, calibration=cal)
    if "/" in spec or os.sep in spec or spec.lower().endswith(".zip"):
        raise UnknownPredictorError(f"no such predictor package: {spec} (a device is a "
                                    "predictor name or the path of a package directory or "
                                    "zip)")
    return load_predictor(spec, strict=strict, download=download, calibration=cal)


def closest_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The ``known`` names a mistyped ``name`` most likely meant, best first: those that
    contain it (case-insensitive, so ``a76`` finds ``cortexA76cpu_tflite21``), then the
    closest spellings (:func:`difflib.get_close_matches`).

    Parameters
    ----------
    name : str
        The name as given.
    known : iterable of str
        The valid names (predictors, devices, labels...).
    n : int, default=3
        At most this many suggestions.
    """
    import difflib

    by_lower: dict[str, str] = {}
    for k in sorted(set(known)):
        by_lower.setdefault(k.lower(), k)
    low = str(name).strip().lower()
    if not low:
        return []
    out = [k for lk, k in by_lower.items() if low in lk]
    out.sort(key=lambda k: (len(k), k))
    for m in difflib.get_close_matches(low, list(by_lower), n=n, cutoff=0.75):
        if by_lower[m] not in out:
            out.append(by_lower[m])
    return out[:n]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" did you mean 'x' or 'y'?"`` for :func:`closest_names`, or ``""`` without any."""
    close = closest_names(name, known)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(c) for c in close) + "?"


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://", "file://"))


def install_predictor(source: str | Path, *, name: str | None = None,
                      version: str | None = None, overwrite: bool = True) -> Path:
    """Install a predictor into the user cache and return its directory.

    ``source``: a URL or file of a package (our format, directory or zip) or of an nn-Meter
    release (a zip or folder of ``<kernel>.pkl`` + ``fusion_rules.json``, imported once into
    our format), or the name of an nn-Meter device (downloaded from its release URL).
    With ``overwrite=False`` an installed package of the same name and version is kept (and,
    when ``name`` and ``version`` are given, nothing is downloaded).
    Concurrent installs of the same package are serialised with a file lock and the package
    directory appears atomically; nothing half-written is left in the cache on failure.
    """
    from .download import download

    src = str(source)
    if src in NNMETER_PREDICTORS:
        name, version, src = src, version or NNMETER_VERSION, nnmeter_url(src)
    root = writable_installed_dir()
    _remove_stale_installs(root)
    with contextlib.ExitStack() as stack:
        held: tuple[str, str] | None = None
        if name and version and not overwrite:
            # Lock before downloading, so that concurrent first uses download only once.
            held = (_path_component(name, "name"), _path_component(str(version), "version"))
            stack.enter_context(_install_lock(root, *held))
            if (root / held[0] / held[1]).is_dir():
                return root / held[0] / held[1]
        tmp_path = Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix=".install-", dir=root)))
        url = None
        if _is_url(src):
            url = src
            fname = src.rstrip("/").rsplit("/", 1)[-1] or "package.zip"
            local = download(src, tmp_path / fname)
            _check_downloaded_zip(local, url)
        else:
            local = Path(src).expanduser()
            if not local.exists():
                if "/" in src or os.sep in src or "." in src:
                    raise PackageError(f"predictor package not found: {local}")
                guess = did_you_mean(src, NNMETER_PREDICTORS).replace(" did", " Did", 1)
                raise PackageError(
                    f"predictor package not found: {src!r} is no file or folder here, nor a "
                    f"device nn-Meter publishes a predictor for "
                    f"({', '.join(sorted(NNMETER_PREDICTORS))}).{guess} Give one of those "
                    "names, or a package's path or URL.")
        try:
            pkg_dir = _as_package_dir(local, tmp_path, name=name, version=version)
            pkg = PredictorPackage.load(pkg_dir)  # verify before it enters the cache
        except PackageError as exc:
            if url is None:
                raise
            # Name the URL, not the temporary file it was downloaded to (removed on exit).
            msg = str(exc).replace(str(local), url)
            if url not in msg:
                msg += f" (downloaded from {url})"
            raise type(exc)(msg) from exc
        key = (_path_component(pkg.name, "name"), _path_component(pkg.version, "version"))
        dest = root / key[0] / key[1]
        if key != held:
            stack.enter_context(_install_lock(root, *key))
        if dest.exists() and not overwrite:
            return dest
        if tmp_path not in pkg_dir.parents:
            staged = tmp_path / "staged"
            shutil.copytree(pkg_dir, staged)
        else:
            staged = pkg_dir
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Same file system (tmp_path is inside root), so each rename is atomic. A directory
        # cannot be swapped in one step: the old one moves into tmp_path (removed with it).
        if dest.exists():
            old = tmp_path / "old"
            os.replace(dest, old)
            try:
                os.replace(staged, dest)
            except BaseException:
                os.replace(old, dest)
                raise
        else:
            os.replace(staged, dest)
    return dest


STALE_INSTALL_S = 6 * 3600


def _remove_stale_installs(root: Path, max_age_s: float = STALE_INSTALL_S) -> None:
    """Remove the temporary ``.install-*`` folders of installs that were killed (SIGKILL,
    SIGTERM, a closed terminal: no ``finally`` ran), so their partial downloads do not stay in
    the cache for good. A folder counts as stale when nothing in it changed for ``max_age_s``
    seconds (a running download writes its ``.part`` file every few milliseconds)."""
    import time

    now = time.time()
    for tmp in root.glob(".install-*"):
        try:
            newest = max([tmp.lstat().st_mtime] +
                         [p.lstat().st_mtime for p in tmp.rglob("*")])
        except OSError:
            continue  # removed meanwhile by its own install
        if now - newest > max_age_s:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_downloaded_zip(path: Path, url: str) -> None:
    """Raise :class:`DownloadError` naming ``url`` unless ``path`` (what it sent) is a zip:
    an HTML error page served with status 200, or a download cut short by a server that sent
    no Content-Length, would otherwise be reported against a temporary file."""
    if zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(48)
    looks = "an HTML page" if head.lstrip()[:1] == b"<" else \
        ("a zip file cut short" if head[:2] == b"PK" else "not a zip file")
    raise DownloadError(f"{url} sent {size} bytes that are {looks} (starting {head[:32]!r}), "
                        "not a predictor zip; check the URL (or NNMETER_NAS_MIRROR) and try "
                        "again, or download the zip elsewhere and install it with "
                        "`nnmeter-nas predictors install PATH.zip`")


def _install_lock(root: Path, name: str, version: str):
    from filelock import FileLock

    return FileLock(str(root / f".{name}-{version}.lock"))


def check_package_name(name: str) -> str:
    """``name`` if it can name an installed package (one folder in the user cache, not
    starting with '.', which the registry skips); else a :class:`PackageError` naming it."""
    return _path_component(name, "name")


def _path_component(s: str, what: str) -> str:
    """``s`` if it is safe as one directory name in the cache (a package's name or version
    comes from its manifest, which must not be able to point outside the cache)."""
    if not s or s in (".", "..") or "/" in s or "\\" in s or s.startswith(".") or \
            s != s.strip() or "\0" in s:
        raise PackageError(f"invalid predictor {what} {s!r}: it must be a plain name (no "
                           "'/', not starting with '.')")
    return s


def _looks_like_nnmeter(path: Path) -> bool:
    if path.is_dir():
        return any(path.rglob("*.pkl")) and not any(path.rglob(MANIFEST))
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith(".pkl") for n in names) and \
        not any(n.rsplit("/", 1)[-1] == MANIFEST for n in names)


def _as_package_dir(local: Path, tmp: Path, *, name: str | None, version: str | None) -> Path:
    """A directory holding a package in our format, converting nn-Meter releases."""
    if _looks_like_nnmeter(local):
        from .nnmeter_import import import_nnmeter_package

        return import_nnmeter_package(local, tmp / "converted", name=name,
                                      version=version or NNMETER_VERSION)
    if local.is_dir():
        return local
    from .format import _Source

    # Verify the zip itself, so that errors name it rather than the temporary folder it is
    # unpacked into (the unpacked copy is verified again before it enters the cache).
    PredictorPackage.load(local)
    src = _Source(local)  # validates the zip (no escaping entries, has a manifest)
    try:
        out = tmp / "unpacked"
        manifest = json.loads(src.read(MANIFEST))
        for rel in list(manifest.get("files", {})) + [MANIFEST]:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(src.read(rel))
    except ValueError as exc:
        raise PackageError(f"{local}: {MANIFEST} is not valid JSON: {exc}") from exc
    finally:
        src.close()
    return out
