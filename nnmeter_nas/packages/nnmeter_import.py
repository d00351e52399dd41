"""Convert nn-Meter's released predictors (``<kernel>.pkl`` + ``fusion_rules.json``) into the
nnmeter_nas package format, once and explicitly (``nnmeter-nas predictors import PATH``).

nn-Meter stores each kernel regressor as a scikit-learn ``RandomForestRegressor`` saved with a
plain ``pickle.dump`` (scikit-learn 0.23.1 for its 1.0 release). Two problems with loading
those directly:

- **Safety.** ``pickle.load`` runs whatever the file asks for. The files are read here by
  :class:`SafeUnpickler`, whose ``find_class`` allow-lists only what such a file needs
  (numpy's array/dtype reconstruction, and the forest/tree classes mapped to inert stand-ins
  that merely record their state). Any other global (``os.system``, ``builtins.eval``...)
  is refused with :class:`UnsafePickleError` naming it, before it can be called.
- **Version drift.** scikit-learn >= 1.3 added ``missing_go_to_left`` to the tree node
  record and refuses older node arrays ("node array from the pickle has an incompatible
  dtype", nn-Meter issue 131). The stand-ins never call scikit-learn: the node arrays are read
  by field name, so pickles from scikit-learn 0.2x to today's all convert.

The trees become a :class:`~nnmeter_nas.regressors.forest.TreeEnsemble`, whose predictions
equal the original forest's bit for bit when that forest predicts with its trees summed in
order (``n_jobs=1``; with ``n_jobs>1`` scikit-learn adds the trees in thread completion order,
so its own result can differ from run to run in the last bits).

Choices recorded in the written manifest:

- ``free_kernel_types = ["reshape"]``. nn-Meter has no feature vector for reshape-like kernels
  (reshape, flatten, squeeze, unsqueeze) and silently counts them as 0 ms. They only change a
  tensor's shape metadata, so 0 ms is the intended cost, not a gap: declaring them free
  reproduces nn-Meter's number without a warning on every network with a flatten. Every
  other kernel type that the device has no regressor for (transpose, pad, mul, sigmoid, or
  ``fc`` on nn-Meter's GPUs...) also gets 0 ms from nn-Meter, silently; here it stays
  ``"missing"``, so the engine warns (or raises with ``strict=True``) while still summing
  to nn-Meter's number.
- ``feature_range = null`` for every kernel, so ``in_domain`` is ``None``. The pickles do not
  record the training data's range, and the span of the split thresholds is *narrower* than
  it (a threshold lies between two training values), so using it would flag common, well
  covered inputs (e.g. a 224x224 stem convolution) as extrapolated. That span is kept as
  ``split_range`` for information only. ``n_train`` is the root node's weighted sample count
  (the training set size for forests fitted without sample weights, as nn-Meter's are).
"""
from __future__ import annotations

import copyreg
import hashlib
import io
import json
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from ..errors import PackageError, UnknownKernelWarning, UnsafePickleError
from ..warn import warn
from ..kernels.fusion_rules import FusionRules
from ..regressors.forest import TreeEnsemble
from .archive_paths import is_symlink, safe_member

FUSION_RULES = "fusion_rules.json"
FEATURE_SET = "nnmeter-2.0"
FREE_KERNEL_TYPES = ("reshape",)
_MAX_MEMBER_BYTES = 4 << 30  # refuse absurd (zip-bomb sized) members up front


# ---------------------------------------------------------------------------- stand-ins
class _Captured:
    """Inert stand-in for an allowed scikit-learn class: keeps constructor arguments and the
    state the pickle gives it, and runs none of the original class's code."""

    qualname = "?"
    args: tuple = ()
    state: Any = None  # copyreg._reconstructor (protocols 0 and 1) bypasses __new__

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Captured":
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


_FOREST_CLASSES = ("RandomForestRegressor", "ExtraTreesRegressor")
_TREE_CLASSES = ("DecisionTreeRegressor", "ExtraTreeRegressor")
# scikit-learn moved these between private modules over the years; all names map to stand-ins.
_SKLEARN_CLASSES: dict[tuple[str, str], str] = {}
for _mod in ("sklearn.ensemble._forest", "sklearn.ensemble.forest"):
    for _cls in _FOREST_CLASSES:
        _SKLEARN_CLASSES[(_mod, _cls)] = _cls
for _mod in ("sklearn.tree._classes", "sklearn.tree.tree"):
    for _cls in _TREE_CLASSES:
        _SKLEARN_CLASSES[(_mod, _cls)] = _cls
_SKLEARN_CLASSES[("sklearn.tree._tree", "Tree")] = "Tree"

_STANDINS: dict[str, type] = {
    name: type(name, (_Captured,), {"qualname": name, "__module__": __name__})
    for name in set(_SKLEARN_CLASSES.values())
}


_RandomStateStandIn = type("RandomState", (_Captured,),
                           {"qualname": "numpy.random.RandomState", "__module__": __name__})


def _inert_ctor(*args: Any, **kwargs: Any) -> _Captured:
    """Stand-in for numpy's RandomState/BitGenerator constructors (a forest may pickle its
    ``random_state``); the generator is never needed to predict."""
    return _RandomStateStandIn()


def _codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol <= 2 pickles of bytes use _codecs.encode(text, "latin1"); refuse other codecs so
    # a pickle cannot make the codec registry import modules.
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii") or \
            not isinstance(obj, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode(encoding, errors)


def _numpy_globals() -> dict[tuple[str, str], Callable]:
    try:  # numpy >= 2 keeps these in numpy._core (numpy.core is a deprecated alias)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    out: dict[tuple[str, str], Callable] = {}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    for mod in ("numpy.random._pickle", "numpy.random"):
        for fn in ("__randomstate_ctor", "__RandomState_ctor", "__bit_generator_ctor",
                   "__generator_ctor"):
            out[(mod, fn)] = _inert_ctor
    return out


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (see the module docstring).

    ``filename`` is used in error messages.
    """

    def __init__(self, file: Any, *, filename: str = "<pickle>") -> None:
        super().__init__(file)
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if (module, name) in _SKLEARN_CLASSES:
            return _STANDINS[_SKLEARN_CLASSES[(module, name)]]
        what = f"{module}.{name}"
        if module.startswith("joblib"):
            raise UnsafePickleError(
                f"{self.filename}: written by joblib ({what}); nn-Meter's predictors are plain "
                "pickles. Re-save the model with pickle.dump, or use nn-Meter's own files")
        if module.startswith("sklearn"):
            raise UnsafePickleError(
                f"{self.filename}: holds the scikit-learn class {what}, which cannot be "
                f"converted; only {', '.join(_FOREST_CLASSES + _TREE_CLASSES)} can")
        raise UnsafePickleError(
            f"{self.filename}: refusing to load {what}: not an allowed class for an nn-Meter "
            "predictor pickle (numpy arrays and scikit-learn regression trees only). Nothing "
            "was executed; the file may be malicious or not an nn-Meter predictor")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.filename}: uses persistent ids, which nn-Meter's "
                                "pickles never do; refusing it")


def safe_load_pickle(data: bytes, *, filename: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; errors name ``filename``."""
    try:
        return SafeUnpickler(io.BytesIO(data), filename=filename).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # the unpickler raises many types on malformed input
        hint = ""
        if data[:2] in (b"\x1f\x8b", b"BZ", b"\xfd7") or data[:1] == b"x":
            hint = " (it looks compressed; nn-Meter's predictors are uncompressed pickles)"
        raise PackageError(f"{filename}: not a readable predictor pickle{hint}: "
                           f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------- conversion
_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold", "weighted_n_node_samples")


def _python_value(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def _tree_state(tree: Any, filename: str) -> dict[str, np.ndarray]:
    """Node arrays of one pickled ``sklearn.tree._tree.Tree`` stand-in."""
    if not isinstance(tree, _STANDINS["Tree"]) or not isinstance(tree.state, dict):
        raise PackageError(f"{filename}: a tree estimator holds {tree!r} instead of a "
                           "scikit-learn Tree")
    st = tree.state
    nodes, values = st.get("nodes"), st.get("values")
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None or \
            not isinstance(values, np.ndarray):
        raise PackageError(f"{filename}: a Tree has no node/value arrays (state keys "
                           f"{sorted(st)})")
    missing = [f for f in _NODE_FIELDS if f not in nodes.dtype.names]
    if missing:
        raise PackageError(f"{filename}: tree node records lack the fields {missing} "
                           f"(have {list(nodes.dtype.names)})")
    n = nodes.shape[0]
    if int(st.get("node_count", n)) != n or nodes.ndim != 1:
        raise PackageError(f"{filename}: a Tree says node_count={st.get('node_count')} but "
                           f"holds {nodes.shape} nodes")
    if values.ndim != 3 or values.shape[0] != n or values.shape[1:] != (1, 1):
        raise PackageError(f"{filename}: only single-output regression trees can be "
                           f"converted (value array of shape {values.shape} for {n} nodes)")
    return {"left": nodes["left_child"], "right": nodes["right_child"],
            "feature": nodes["feature"], "threshold": nodes["threshold"],
            "value": values[:, 0, 0].astype(np.float64),
            "root_weight": float(nodes["weighted_n_node_samples"][0]) if n else 0.0,
            "n_features": int(tree.args[0]) if tree.args else None}


def ensemble_from_pickle(data: bytes, *, filename: str = "<pickle>") -> tuple[TreeEnsemble,
                                                                              dict]:
    """Convert one nn-Meter kernel pickle to a :class:`TreeEnsemble`.

    Returns the ensemble and a dict of facts about the original (estimator class, scikit-learn
    version, hyper-parameters, ``n_train``, ``split_range``) for the manifest.
    """
    obj = safe_load_pickle(data, filename=filename)
    kind = getattr(obj, "qualname", type(obj).__name__)
    if not isinstance(obj, _Captured) or kind == "Tree" or not isinstance(obj.state, dict):
        raise PackageError(f"{filename}: holds a {kind}, not a fitted scikit-learn "
                           "regression forest or tree")
    st = obj.state
    if kind in _FOREST_CLASSES:
        estimators = st.get("estimators_")
        if not isinstance(estimators, list) or not estimators:
            raise PackageError(f"{filename}: the {kind} is not fitted (no estimators_)")
    else:
        estimators = [obj]
    if int(_python_value(st.get("n_outputs_", 1)) or 1) != 1:
        raise PackageError(f"{filename}: multi-output regressors cannot be converted "
                           f"(n_outputs_={st.get('n_outputs_')})")
    trees = []
    for i, est in enumerate(estimators):
        if not isinstance(est, _Captured) or est.qualname not in _TREE_CLASSES or \
                not isinstance(est.state, dict) or "tree_" not in est.state:
            raise PackageError(f"{filename}: estimator {i} of the {kind} is {est!r}, not a "
                               "fitted regression tree")
        trees.append(_tree_state(est.state["tree_"], filename))
    n_features = _python_value(st.get("n_features_in_", st.get("n_features_")))
    if n_features is None:
        n_features = trees[0]["n_features"]
    if n_features is None or any(t["n_features"] not in (None, n_features) for t in trees):
        raise PackageError(f"{filename}: inconsistent or unknown number of features")
    sk_version = _python_value(st.get("_sklearn_version"))
    try:
        ens = TreeEnsemble.from_tree_arrays(
            trees, int(n_features), aggregate="mean",
            meta={"origin": f"nn-Meter pickle {filename}", "estimator": kind,
                  "sklearn_version": sk_version})
    except ValueError as exc:
        raise PackageError(f"{filename}: the trees are malformed: {exc}") from exc

    lo = np.full(ens.n_features, np.inf)
    hi = np.full(ens.n_features, -np.inf)
    inner = ens.feature >= 0
    np.minimum.at(lo, ens.feature[inner], ens.threshold[inner])
    np.maximum.at(hi, ens.feature[inner], ens.threshold[inner])
    split_range = {"min": [None if not np.isfinite(v) else float(v) for v in lo],
                   "max": [None if not np.isfinite(v) else float(v) for v in hi]}
    weights = {t["root_weight"] for t in trees}
    n_train = None
    bootstrap_subsample = st.get("bootstrap", False) and st.get("max_samples") is not None
    if len(weights) == 1 and not bootstrap_subsample:
        w = weights.pop()
        n_train = int(w) if float(w).is_integer() and w > 0 else None
    params = {k: _python_value(st[k]) for k in ("n_estimators", "max_depth", "max_features",
                                             "min_samples_leaf", "min_samples_split",
                                             "bootstrap", "criterion", "random_state")
              if k in st}
    facts = {"estimator": kind, "sklearn_version": sk_version, "params": params,
             "n_train": n_train, "split_range": split_range}
    return ens, facts


# ---------------------------------------------------------------------------- release files
@dataclass
class NnMeterRelease:
    """The files of an nn-Meter predictor release, read into memory.

    ``top``: the folder inside ``src`` holding them (``""`` when at the root).
    """

    src: Path
    top: str
    pickles: dict[str, bytes] = field(default_factory=dict)  # kernel name -> bytes
    fusion_rules: bytes = b""

    @property
    def default_name(self) -> str:
        if self.top:
            return PurePosixPath(self.top).name
        return self.src.stem if self.src.is_file() else self.src.name


def read_release(src: str | Path) -> NnMeterRelease:
    """Read an nn-Meter release: a zip or folder holding ``<kernel>.pkl`` files and
    ``fusion_rules.json``, either at its root or inside one top folder (as nn-Meter's
    downloads are)."""
    src = Path(src).expanduser()
    files: dict[PurePosixPath, Callable[[], bytes]] = {}
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            rel = PurePosixPath(p.relative_to(src).as_posix())
            if p.is_file() and len(rel.parts) <= 2:
                files[rel] = p.read_bytes
    elif src.is_file():
        try:
            zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PackageError(f"{src}: not an nn-Meter predictor release (neither a folder "
                               f"nor a readable zip file: {exc}); if the download was cut "
                               "short, download it again") from exc
        for info in zf.infolist():
            rel = safe_member(info.filename)
            if rel is None:
                zf.close()
                raise PackageError(f"{src}: zip entry {info.filename!r} escapes the archive's "
                                   "folder; refusing to read this archive")
            if is_symlink(info):
                zf.close()
                raise PackageError(f"{src}: zip entry {info.filename!r} is a symbolic link; an "
                                   "nn-Meter release holds plain files only, refusing to read "
                                   "this archive")
            if info.is_dir() or rel.parts[0] == "__MACOSX" or len(rel.parts) > 2:
                continue
            if info.file_size > _MAX_MEMBER_BYTES:
                zf.close()
                raise PackageError(f"{src}: zip entry {info.filename!r} claims "
                                   f"{info.file_size} bytes; refusing it")

            def reader(name: str = info.filename, zf: zipfile.ZipFile = zf) -> bytes:
                try:
                    return zf.read(name)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    raise PackageError(f"{src}: the zip entry {name!r} is corrupt ({exc}); "
                                       "download the release again") from exc
            files[rel] = reader
    else:
        raise PackageError(f"nn-Meter predictor release not found: {src}")

    rules = [r for r in files if r.name == FUSION_RULES]
    if not rules:
        raise PackageError(f"{src}: no {FUSION_RULES} at its root or in one top folder; an "
                           f"nn-Meter predictor release holds <kernel>.pkl files and "
                           f"{FUSION_RULES}")
    if len(rules) > 1:
        raise PackageError(f"{src}: several {FUSION_RULES} files ({[str(r) for r in rules]}); "
                           "import one predictor folder at a time")
    folder = rules[0].parent
    top = "" if str(folder) == "." else str(folder)
    rel_out = NnMeterRelease(src=src, top=top)
    try:
        rel_out.fusion_rules = files[rules[0]]()
        for rel, read in sorted(files.items()):
            if rel.parent == folder and rel.suffix == ".pkl":
                rel_out.pickles[rel.stem] = read()
    finally:
        if src.is_file():
            zf.close()
    if not rel_out.pickles:
        raise PackageError(f"{src}: no <kernel>.pkl regressors next to {rules[0]}")
    return rel_out


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _valid_component(s: str) -> bool:
    return bool(s) and "/" not in s and "\\" not in s and not s.startswith(".") and \
        s.strip() == s


def _warn_unknown_kernels(release: NnMeterRelease, known: list[str]) -> None:
    """Warn (:class:`UnknownKernelWarning`) about each ``<kernel>.pkl`` whose name is not a
    kernel type nn-Meter's predictors have a regressor for: a regressor is looked up by its
    file name, so a misnamed file serves no kernel and leaves its own kernel type missing."""
    from ..features.extract import regressor_name
    from .registry import did_you_mean

    for kernel in sorted(release.pickles):
        if kernel in known:
            continue
        fname = f"{release.top + '/' if release.top else ''}{kernel}.pkl"
        guess = did_you_mean(kernel, known).replace(" did", " Did", 1)
        used_by = regressor_name(kernel)
        serves = (f"this one serves only kernels of type {kernel!r}, if any" if used_by == kernel
                  else f"this one serves no kernel (kernels of type {kernel!r} use "
                       f"{used_by!r})")
        warn(f"{release.src.name}:{fname}: {kernel!r} is not a kernel type nn-Meter's "
             "predictors have a regressor for; a regressor is looked up by its file "
             f"name, so {serves}.{guess} Known types: {', '.join(known)} (rename the "
             "file if it is one of them)", UnknownKernelWarning)


def import_nnmeter_package(src: str | Path, dest: str | Path, *, name: str | None = None,
                           version: str = "1.0", overwrite: bool = False,
                           progress: bool = True) -> Path:
    """Convert an nn-Meter predictor release (zip or folder) into a package at ``dest``.

    ``name`` defaults to the release's top folder (or file/folder name); when it is one of
    nn-Meter's four devices, its device, framework and hardware are filled in and every
    kernel regressor nn-Meter lists for it must be present. Returns ``dest``.
    Raises :class:`~nnmeter_nas.errors.PackageError` (or :class:`UnsafePickleError`) naming
    the file at fault; nothing is written then.
    """
    from .format import write_package
    from .registry import NNMETER_PREDICTORS
    from ..features.extract import FEATURE_NAMES

    release = read_release(src)
    name = name or release.default_name
    version = str(version)
    if not _valid_component(name) or not _valid_component(version):
        raise PackageError(f"invalid predictor name/version {name!r}/{version!r} (must be "
                           "non-empty, without '/' and not start with '.')")
    known = NNMETER_PREDICTORS.get(name)
    if known is not None:
        absent = sorted(set(known["kernels"]) - set(release.pickles))
        if absent:
            raise PackageError(f"{release.src}: the nn-Meter predictor {name!r} lacks the "
                               f"regressor files {[k + '.pkl' for k in absent]}; the release "
                               "is incomplete, download it again")
    try:
        rules_json = json.loads(release.fusion_rules)
        if not isinstance(rules_json, dict):
            raise ValueError("not a JSON object")
        rules = FusionRules.from_dict(rules_json)
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise PackageError(f"{release.src}: {FUSION_RULES} is not a valid fusion rules file: "
                           f"{exc}") from exc

    regressors: dict[str, TreeEnsemble] = {}
    kernel_info: dict[str, dict] = {}
    items = sorted(release.pickles.items())
    _warn_unknown_kernels(release, sorted(FEATURE_NAMES))
    bar = None
    if progress and len(items) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"convert {name}", unit="kernel", leave=False)
    try:
        for kernel, data in items:
            fname = f"{release.top + '/' if release.top else ''}{kernel}.pkl"
            if not _valid_component(kernel):
                raise PackageError(f"{release.src}: invalid kernel file name {fname!r}")
            ens, facts = ensemble_from_pickle(data, filename=f"{release.src.name}:{fname}")
            expect = FEATURE_NAMES.get(kernel)
            if expect is not None and ens.n_features != len(expect):
                raise PackageError(f"{release.src}: {fname} takes {ens.n_features} features "
                                   f"but nn-Meter's {kernel!r} regressor takes {len(expect)} "
                                   f"({expect}); is the file misnamed?")
            regressors[kernel] = ens
            kernel_info[kernel] = {"feature_range": None, "n_train": facts.pop("n_train"),
                                   "split_range": facts.pop("split_range"),
                                   "original": dict(facts, file=fname,
                                                    sha256=_sha256(data))}
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    source_files = {f"{k}.pkl": _sha256(v) for k, v in items}
    source_files[FUSION_RULES] = _sha256(release.fusion_rules)
    source = {"kind": "nnmeter-import", "original": release.src.name,
              "folder": release.top or None, "files": source_files,
              "sklearn_versions": sorted({str(i["original"]["sklearn_version"])
                                          for i in kernel_info.values()
                                          if i["original"]["sklearn_version"] is not None}),
              "feature_range": "not recorded by nn-Meter; split_range is the span of the "
                               "trees' thresholds (informational)",
              "free_kernel_types": "reshape-like kernels are layout-only; nn-Meter counts "
                                   "them as 0 ms"}
    if release.src.is_file():
        source["archive_sha256"] = _sha256(release.src.read_bytes())
    if known is not None:
        device, framework, hardware = name, known["framework"], known["hardware"]
        description = f"nn-Meter {hardware}, {framework} (imported from {release.src.name})"
    else:
        device, framework, hardware = name, "unknown", None
        description = f"nn-Meter predictor imported from {release.src.name}"
    return write_package(dest, name=name, version=version, device=device, framework=framework,
                         regressors=regressors, fusion_rules=rules, feature_set=FEATURE_SET,
                         description=description, kernel_info=kernel_info,
                         free_kernel_types=list(FREE_KERNEL_TYPES), source=source,
                         extra={"hardware": hardware}, overwrite=overwrite)
