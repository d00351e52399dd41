"""The public :class:`LatencyPredictor`: model -> kernels -> features -> regressors -> ms."""
from __future__ import annotations

import contextlib
import gc
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .cache_model import weight_mib
from .calibration import Calibration
from .errors import LatencyWarning, MissingRegressorError, PackageError
from .warn import warn
from .features.extract import extract_features, regressor_name, weight_count
from .graph import OpGraph, load_graph
from .kernels.detector import Kernel, detect_kernels
from .packages.format import PredictorPackage


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (if it was enabled).

    Reading a network allocates many short-lived objects (graph nodes, protobuf and torch
    wrappers, kernels), and each full collection walks every tracked object of the process
    (with torch, NNI and a built space about 450,000). Reference counting still frees
    everything acyclic at once; cyclic garbage made in the block waits for the next
    collection after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# predict_many collects the young generation every this many networks (see predict_many)
_GC_CHUNK = 64


@dataclass
class KernelPrediction:
    """One kernel's share of a prediction.

    ``status`` is ``"predicted"`` (a regressor gave ``latency_ms``), ``"free"`` (the package
    declares the kernel type costless, e.g. a reshape) or ``"missing"`` (no regressor: counted
    as 0 ms, warned about, and refused with ``strict=True``). ``in_domain`` says whether the
    features lie inside the range the regressor was trained on (None when the package does not
    record that range).
    """

    name: str
    kernel_type: str
    regressor: str
    features: list[float] | None
    latency_ms: float
    status: str
    in_domain: bool | None
    nodes: list[str] = field(default_factory=list)

    @property
    def has_regressor(self) -> bool:
        return self.status == "predicted"


class KernelBreakdown(list):
    """List of :class:`KernelPrediction` with network-level summaries.

    ``overhead_ms`` is the package's constant per-network cost (``network_overhead_ms`` in its
    manifest, e.g. a runtime's launch cost), added once to the kernels' sum. ``weight_mib`` is
    the network's float32 weight size (MiB) and ``cold_share`` the share of the cold-cache
    extra its kernels were charged (:mod:`~nnmeter_nas.cache_model`; None for packages
    without one).
    """

    def __init__(self, kernels: Iterable[KernelPrediction] = (), overhead_ms: float = 0.0,
                 weight_mib: float = 0.0, cold_share: float | None = None):
        super().__init__(kernels)
        self.overhead_ms = float(overhead_ms)
        self.weight_mib = float(weight_mib)
        self.cold_share = cold_share

    @property
    def latency_ms(self) -> float:
        return float(sum(k.latency_ms for k in self)) + self.overhead_ms

    @property
    def in_domain(self) -> bool | None:
        """False if any kernel lies outside its regressor's training range or has no
        regressor at all; None if some range is unknown; True otherwise."""
        if any(k.status == "missing" for k in self):
            return False
        flags = [k.in_domain for k in self if k.status == "predicted"]
        if any(f is False for f in flags):
            return False
        return None if any(f is None for f in flags) else True

    @property
    def missing_kernel_types(self) -> list[str]:
        return sorted({k.kernel_type for k in self if k.status == "missing"})

    def by_regressor(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self:
            out[k.regressor] = out.get(k.regressor, 0.0) + k.latency_ms
        return out

    def table(self) -> str:
        rows = [f"{'kernel':28s} {'regressor':16s} {'ms':>9s}  status     features"]
        for k in self:
            flag = "" if k.in_domain is not False else " (out of domain)"
            feats = "" if k.features is None else ", ".join(f"{f:g}" for f in k.features)
            rows.append(f"{k.name:28s} {k.regressor:16s} {k.latency_ms:9.4f}  "
                        f"{k.status:9s}  [{feats}]{flag}")
        if self.overhead_ms:
            rows.append(f"{'network overhead':28s} {'':16s} {self.overhead_ms:9.4f}")
        rows.append(f"{'total':28s} {'':16s} {self.latency_ms:9.4f}")
        if self.cold_share is not None:
            rows.append(f"network weights {self.weight_mib:.1f} MiB: its kernels pay "
                        f"{self.cold_share:.0%} of their cold-cache extra (cache model)")
        return "\n".join(rows)


class LatencyPredictor:
    """Predicts a network's inference latency (ms) on one device as the sum of its kernels'.

    Usually obtained with :func:`nnmeter_nas.load_predictor` rather than built directly.

    Parameters
    ----------
    package : PredictorPackage
        A loaded :class:`~nnmeter_nas.packages.format.PredictorPackage`.
    strict : bool, default=False
        Raise :class:`~nnmeter_nas.errors.MissingRegressorError` when a network has kernel
        types without a regressor, instead of warning once and counting them as 0 ms.
    calibration : str, default=None
        Name of one of the package's per-space calibrations (``calibrations`` in its
        manifest, see :mod:`nnmeter_nas.calibration`), applied to every predicted kernel;
        None predicts uncalibrated.
    cache_model : bool, default=True
        Mix the package's warm- and cold-cache kernel regressors by each network's weight
        size (:mod:`nnmeter_nas.cache_model`), for packages that hold both. False predicts
        with the warm regressors alone, as a package without them does.

    See Also
    --------
    nnmeter_nas.load_predictor : Load a predictor by device name.

    Examples
    --------
    >>> import torch
    >>> from nnmeter_nas import load_predictor
    >>> predictor = load_predictor("cortexA76cpu_tflite21")
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, stride=2, padding=1),
    ...                           torch.nn.BatchNorm2d(32), torch.nn.ReLU())
    >>> ms = predictor.predict(net, input_shape=(1, 3, 224, 224))
    >>> ms > 0
    True

    The breakdown by kernel (fused as the device's runtime fuses them; the batch norm folds
    into the convolution), and several networks in one call:

    >>> [k.kernel_type for k in predictor.predict_kernels(net, input_shape=(1, 3, 224, 224))]
    ['conv-relu']
    >>> wider = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, stride=2, padding=1),
    ...                             torch.nn.BatchNorm2d(64), torch.nn.ReLU())
    >>> small, big = predictor.predict_many([net, wider], input_shape=(1, 3, 224, 224))
    >>> small == ms and small < big
    True
    """

    def __init__(self, package: PredictorPackage, *, strict: bool = False,
                 calibration: str | None = None, cache_model: bool = True) -> None:
        self.package = package
        self.strict = strict
        self.calibration = calibration
        self._cache_model = package.cache_model if cache_model else None
        self._calibration: Calibration | None = None
        if calibration is not None:
            known = package.manifest.get("calibrations") or {}
            if calibration not in known:
                raise PackageError(
                    f"predictor {package.name!r} has no calibration {calibration!r}; it has "
                    f"{sorted(known) or 'none'} (fit one with "
                    "nnmeter_nas.builder.calibrate on networks measured on the device)")
            self._calibration = Calibration.from_dict(known[calibration])
        self._warned: set[tuple[str, str]] = set()
        self._rules_json: str | None = None
        self._ranges = {reg: package.feature_range(reg) for reg in package.regressors}

    # ---------------------------------------------------------------- descriptions
    @property
    def name(self) -> str:
        return self.package.name

    @property
    def version(self) -> str:
        return self.package.version

    @property
    def device(self) -> str:
        return self.package.device

    @property
    def fusion_rules(self):
        return self.package.fusion_rules

    @property
    def uses_cache_model(self) -> bool:
        """Whether predictions mix warm and cold-cache kernel latencies by the network's weight
        size (:mod:`~nnmeter_nas.cache_model`): a kernel's latency then depends on the whole
        network, not on the kernel alone."""
        return self._cache_model is not None

    @property
    def network_overhead_ms(self) -> float:
        """Constant cost (ms) the package adds once per network (0 for most packages)."""
        return float(self.package.manifest.get("network_overhead_ms", 0.0) or 0.0)

    @property
    def kernel_types(self) -> list[str]:
        return sorted(self.package.regressors)

    @property
    def calibrations(self) -> list[str]:
        """Names of the per-space calibrations the package holds."""
        return sorted(self.package.manifest.get("calibrations") or {})

    def __repr__(self) -> str:
        cal = f", calibration={self.calibration!r}" if self.calibration else ""
        return (f"LatencyPredictor(name={self.name!r}, version={self.version!r}, "
                f"device={self.device!r}, kernels={len(self.package.regressors)}{cal}, "
                f"source={str(self.package.path)!r})")

    # ---------------------------------------------------------------- pipeline
    def graph(self, model: Any, *, input_shape: Sequence[int] | None = None) -> OpGraph:
        g = load_graph(model, input_shape=input_shape)
        self._warn_batch(g)
        return g

    def _warn_batch(self, graph: OpGraph) -> None:
        """Warn (once per predictor) when the network's image input has a batch above 1: the
        kernels were measured at batch 1 and no feature holds the batch, so the prediction is
        one batch-1 inference, whatever the batch."""
        if (self.device, "batch") in self._warned:
            return
        for node in graph:
            if node.inputs:
                continue  # only the operators that read the network's inputs
            batch = next((s[0] for s in node.input_shapes if len(s) == 4), 1)
            if isinstance(batch, int) and batch > 1:
                self._warned.add((self.device, "batch"))
                warn(f"predictor {self.name!r}: the network's input has batch {batch}, "
                     "but its kernels were measured at batch 1 and no feature holds "
                     "the batch: the prediction is the latency of one batch-1 "
                     f"inference, not of batch {batch}. Predict at batch 1 (input "
                     "shape 1,C,H,W)", LatencyWarning)
                return

    def kernels(self, model: Any, *, input_shape: Sequence[int] | None = None) -> list[Kernel]:
        """The kernels ``model`` splits into under this device's fusion rules."""
        return detect_kernels(self.graph(model, input_shape=input_shape),
                              self.package.fusion_rules)

    def _kernel_features(self, kernels: list[Kernel]
                         ) -> list[tuple[Kernel, str, list[float] | None]]:
        """``(kernel, regressor name, features)`` per kernel (the device-independent part of
        a plan: it depends on the kernels and the package's feature set only)."""
        fs = self.package.feature_set
        return [(k, regressor_name(k.type), extract_features(k, fs)) for k in kernels]

    def _plan(self, kernels: list[Kernel] | list[tuple[Kernel, str, list[float] | None]]
              ) -> list[tuple[Kernel, str, list[float] | None, str]]:
        """Each kernel with its regressor, features and status (``predicted``, ``free`` or
        ``missing``); ``kernels`` may be given with their features already extracted."""
        if kernels and isinstance(kernels[0], Kernel):
            kernels = self._kernel_features(kernels)  # type: ignore[arg-type]
        plan = []
        free = self.package.free_kernel_types
        regressors = self.package.regressors
        for k, reg, feats in kernels:  # type: ignore[misc]
            if k.type in free or reg in free:
                status = "free"
            elif feats is not None and reg in regressors:
                status = "predicted"
            else:
                status = "missing"
            plan.append((k, reg, feats, status))
        missing = sorted({k.type for k, _, _, s in plan if s == "missing"})
        if missing:
            if self.strict:
                raise MissingRegressorError(
                    f"predictor {self.name!r} (device {self.device}) has no regressor for "
                    f"kernel types {missing} ({_first_nodes(plan, missing)}); use a "
                    "predictor that covers them, replace those operators with ones it "
                    "prices, or strict=False to count them as 0 ms with a warning")
            new = [t for t in missing if (self.device, t) not in self._warned]
            if new:
                self._warned.update((self.device, t) for t in new)
                warn(f"predictor {self.name!r} (device {self.device}) has no "
                     f"regressor for kernel types {new} ({_first_nodes(plan, new)}): "
                     "counted as 0 ms, so the prediction leaves their work out; use a "
                     "predictor that covers them or replace those operators with ones it "
                     "prices (see predict_kernels(...) for the breakdown; strict=True "
                     "raises)", LatencyWarning)
        return plan

    def _in_domain(self, reg: str, X: np.ndarray) -> np.ndarray | None:
        # a regressor that records its own domain (kernel cost models: the ranges of their
        # cost terms) decides; otherwise the package's feature_range box
        own = getattr(self.package.regressors.get(reg), "in_domain", None)
        if callable(own):
            inside = own(X)
            if inside is not None:
                return inside
        rng = self._ranges.get(reg)
        if rng is None:
            return None
        lo, hi = rng
        tol = 1e-9 * np.maximum(1.0, np.abs(hi))
        return np.all((X >= lo - tol) & (X <= hi + tol), axis=1)

    def _evaluate(self, plans: list[list[tuple[Kernel, str, list[float] | None, str]]],
                  weights: bool = True
                  ) -> tuple[list[list[float]], list[list[bool | None]], list[float] | None,
                             list[float] | None]:
        """Kernel latencies (ms) and in-domain flags of several networks' plans, with one
        regressor call per kernel type; and each network's weight MiB (None when neither
        ``weights`` nor the package's cache model asks for it) and cold share."""
        groups: dict[str, list[tuple[int, int]]] = {}
        for m, plan in enumerate(plans):
            for i, entry in enumerate(plan):
                if entry[3] == "predicted":
                    reg = entry[1]
                    group = groups.get(reg)
                    if group is None:
                        group = groups[reg] = []
                    group.append((m, i))
        lat: list[list[float]] = [[0.0] * len(p) for p in plans]
        dom: list[list[bool | None]] = [[None] * len(p) for p in plans]
        fs = self.package.feature_set
        cm = self._cache_model
        mib = None
        if weights or cm is not None:
            mib = [weight_mib(sum(weight_count(reg, feats, fs)
                                  for _, reg, feats, status in plan if status == "predicted"))
                   for plan in plans]
        share = None if cm is None else [cm.cold_share(w) for w in mib]  # type: ignore
        for reg, idx in groups.items():
            X = np.asarray([plans[m][i][2] for m, i in idx], dtype=float)
            y = self.package.regressors[reg].predict(X)
            if cm is not None:
                cold = self.package.cold_regressors.get(reg)
                y = cm.apply(y, y if cold is None else cold.predict(X),
                             [share[m] for m, _ in idx])  # type: ignore[index]
            if self._calibration is not None:
                y = self._calibration.kernel_ms(reg, y)
            inside = self._in_domain(reg, X)
            flags = [None] * len(idx) if inside is None else \
                np.asarray(inside, dtype=bool).tolist()
            for (m, i), v, f in zip(idx, np.asarray(y, dtype=float).tolist(), flags):
                lat[m][i] = v
                dom[m][i] = f
        return lat, dom, mib, share

    def _warn_out_of_domain(self, regressors: Iterable[str]) -> None:
        new = [r for r in sorted(set(regressors))
               if (self.device, "domain:" + r) not in self._warned]
        if new:
            self._warned.update((self.device, "domain:" + r) for r in new)
            warn(f"predictor {self.name!r}: kernels of type {new} lie outside "
                 "the feature range their regressors were trained on; their "
                 "latencies are extrapolated, not calibrated (in_domain=False "
                 "in predict_kernels)", LatencyWarning)

    def _run(self, plans: list[list[tuple[Kernel, str, list[float] | None, str]]]
             ) -> list[KernelBreakdown]:
        """Evaluate several networks' plans with one regressor call per kernel type."""
        lat, dom, mib, share = self._evaluate(plans)
        out = []
        for m, plan in enumerate(plans):
            bd = KernelBreakdown(
                (KernelPrediction(name=k.name, kernel_type=k.type, regressor=reg,
                                  features=feats, latency_ms=float(lat[m][i]), status=status,
                                  in_domain=dom[m][i], nodes=list(k.nodes))
                 for i, (k, reg, feats, status) in enumerate(plan)),
                overhead_ms=self.network_overhead_ms,
                weight_mib=mib[m],  # type: ignore[index]
                cold_share=None if share is None else share[m])
            self._warn_out_of_domain(k.regressor for k in bd if k.in_domain is False)
            out.append(bd)
        return out

    # ---------------------------------------------------------------- public API
    def predict_kernels(self, model: Any, *, input_shape: Sequence[int] | None = None
                        ) -> KernelBreakdown:
        """Per-kernel breakdown of ``model``'s predicted latency.

        Parameters
        ----------
        model : torch.nn.Module, str, path, onnx.ModelProto, bytes, dict or OpGraph
            As for :meth:`predict`.
        input_shape : tuple of int, default=None
            NCHW input shape, batch included (required for a torch module).

        Returns
        -------
        KernelBreakdown
            One :class:`KernelPrediction` per kernel (``latency_ms`` in ms, ``status``,
            ``in_domain``); ``.latency_ms`` is the network's total and ``.table()`` a
            printable summary.

        Examples
        --------
        >>> import torch
        >>> from nnmeter_nas import load_predictor
        >>> predictor = load_predictor("cortexA76cpu_tflite21")
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU())
        >>> bd = predictor.predict_kernels(net, input_shape=(1, 3, 56, 56))
        >>> [(k.kernel_type, k.status) for k in bd]
        [('conv-relu', 'predicted'), ('conv-relu', 'predicted')]
        >>> abs(bd.latency_ms - sum(k.latency_ms for k in bd) - bd.overhead_ms) < 1e-9
        True
        """
        return self._run([self._plan(self.kernels(model, input_shape=input_shape))])[0]

    def predict(self, model: Any, *, input_shape: Sequence[int] | None = None) -> float:
        """Predicted latency of ``model``.

        Parameters
        ----------
        model : torch.nn.Module, str, path, onnx.ModelProto, bytes, dict or OpGraph
            A torch module (with ``input_shape``), an ONNX file path, ``onnx.ModelProto`` or
            serialized bytes, an nn-Meter IR dict or ``.json`` file, or an ``OpGraph``.
        input_shape : tuple of int, default=None
            NCHW input shape, batch included, e.g. ``(1, 3, 224, 224)``. Required for a torch
            module; for an ONNX model it overrides dynamic input dimensions.

        Returns
        -------
        float
            Predicted latency in ms (the kernels' sum plus the package's per-network
            overhead).

        Examples
        --------
        >>> import torch
        >>> from nnmeter_nas import load_predictor
        >>> predictor = load_predictor("cortexA76cpu_tflite21")
        >>> conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        >>> predictor.predict(conv, input_shape=(1, 3, 64, 64)) < predictor.predict(
        ...     conv, input_shape=(1, 3, 128, 128))
        True
        """
        return self.predict_kernels(model, input_shape=input_shape).latency_ms

    def predict_many(self, models: Iterable[Any], *,
                     input_shape: Sequence[int] | None = None,
                     shared: dict | None = None) -> list[float]:
        """Latency (ms) of each model; all kernels of a type across the models go to their
        regressor in one vectorised call.

        Each distinct model is read once (the same object, file path or bytes repeated in
        ``models`` is not re-read), and kernels are detected once per distinct graph
        (networks whose graphs are equal, e.g. one architecture sampled twice, share it).

        Parameters
        ----------
        models : iterable
            Models as :meth:`predict` takes them.
        input_shape : sequence of int, default=None
            NCHW input shape of torch modules (and override for ONNX inputs).
        shared : dict, default=None
            A dict handed to the ``predict_many`` of several predictors over the same models
            (e.g. one per device): the graphs read, their kernels (per fusion rules) and
            feature vectors (per feature set) are kept in it and reused, so each is computed
            once for all the devices. It holds the graphs: drop it with the models.
        """
        # The collector is paused for the whole call: reading networks leaves no reference
        # cycles behind (what the call allocates goes when its last reference does, here
        # before the collector is on again), and each automatic collection would walk the
        # young objects again. Every _GC_CHUNK networks the young generation is collected all
        # the same, so that a long call holds back no more than that many networks' cyclic
        # garbage, if any.
        collect = gc.isenabled()
        with gc_paused():
            memo: dict = {} if shared is None else shared
            shape_key = repr(input_shape)
            rules_key = self._rules_key()
            fs = self.package.feature_set
            plans, planned = [], {}
            alive = []  # this call's graphs, so that equal ones can be found by signature
            m = None
            for n, m in enumerate(models):
                if collect and n and n % _GC_CHUNK == 0:
                    gc.collect(0)
                plans.append(self._many_plan(m, memo, input_shape, shape_key, rules_key, fs,
                                             planned, alive))
            lat, dom, _, _ = self._evaluate(plans, weights=False)
            self._warn_out_of_domain((plan[i][1] for plan, flags in zip(plans, dom)
                                      for i, f in enumerate(flags) if f is False))
            overhead = self.network_overhead_ms
            # summed as KernelBreakdown.latency_ms sums (same order, same result)
            out = [float(sum(v)) + overhead for v in lat]
            del memo, plans, planned, alive, lat, dom, m  # freed while the collector waits
        return out

    def _many_plan(self, m: Any, memo: dict, input_shape: Sequence[int] | None,
                   shape_key: str, rules_key: str, fs: str, planned: dict, alive: list) -> list:
        """The plan of one model of :meth:`predict_many` (read, detected and featurised once
        per distinct model and graph, through ``memo`` and ``planned``)."""
        key, ref = _model_key(m)
        hit = memo.get(("graph", key, shape_key)) if key is not None else None
        if hit is not None and (ref is None or hit[0]() is m):
            g = hit[1]
        else:
            g = self.graph(m, input_shape=input_shape)
            if key is not None:
                memo[("graph", key, shape_key)] = (ref, g)
        alive.append(g)
        sig = _graph_class(memo, g)
        plan = planned.get(sig)
        if plan is not None:
            return plan
        kernels = memo.get(("kernels", sig, rules_key))
        if kernels is None:
            kernels = memo[("kernels", sig, rules_key)] = detect_kernels(
                g, self.package.fusion_rules)
        feats = memo.get(("features", sig, rules_key, fs))
        if feats is None:
            feats = memo[("features", sig, rules_key, fs)] = self._kernel_features(kernels)
        plan = planned[sig] = self._plan(feats)
        return plan

    def _rules_key(self) -> str:
        """The fusion rules as a string: predictors with equal rules detect equal kernels."""
        if self._rules_json is None:
            self._rules_json = json.dumps(self.package.fusion_rules.to_dict(), sort_keys=True,
                                          default=str)
        return self._rules_json

    def predict_kernel_features(self, regressor: str, X: np.ndarray) -> np.ndarray:
        """Latency (ms) of raw feature rows for one kernel regressor (shape ``(n, f)``)."""
        if regressor not in self.package.regressors:
            raise MissingRegressorError(f"predictor {self.name!r} has no regressor "
                                        f"{regressor!r}; it has {self.kernel_types}")
        return self.package.regressors[regressor].predict(np.asarray(X, dtype=float))

    @classmethod
    def from_path(cls, path: str | Path, **kw: Any) -> "LatencyPredictor":
        return cls(PredictorPackage.load(path), **kw)


def _first_nodes(plan: list[tuple[Kernel, str, list[float] | None, str]],
                 types: list[str]) -> str:
    """Where the first kernel of each of ``types`` lies in ``plan``: its first node (an ONNX
    node name, which for an exported torch module holds the module path, e.g.
    ``/blocks.2/act/Erf``), its operators and how many kernels of the type there are."""
    first: dict[str, Kernel] = {}
    count: dict[str, int] = {}
    for k, _, _, status in plan:
        if status == "missing" and k.type in types:
            first.setdefault(k.type, k)
            count[k.type] = count.get(k.type, 0) + 1
    parts = []
    for t in types:
        k = first.get(t)
        if k is None:  # (cannot happen: every type was collected from the plan)
            continue
        node = k.nodes[0] if k.nodes else k.name
        more = f", {count[t]} kernels" if count[t] > 1 else ""
        parts.append(f"{t}: first at node {node!r}{more}")
    return "; ".join(parts)


def _model_key(model: Any) -> tuple[Any, Any]:
    """``(key, weak reference or None)`` identifying ``model`` within one ``predict_many``
    call; key None: never shared. Objects are known by id, checked through a weak reference
    (an id can be reused once its object is gone; models are not kept alive)."""
    if isinstance(model, (str, Path)):
        return ("path", str(Path(model).resolve())), None
    if isinstance(model, (bytes, bytearray)):
        return ("bytes", bytes(model)), None
    try:
        return ("object", id(model)), weakref.ref(model)
    except TypeError:  # dicts (nn-Meter IR) and protos take no weak references
        return None, None


def _graph_class(memo: dict, graph: OpGraph) -> tuple:
    """A key shared by the graphs in ``memo`` that :func:`_graph_signature` finds equal.

    The full signature costs about as much as kernel detection, so it is computed only for
    graphs that share their node count and node types with another graph seen (a network
    read once, the common case, never pays it)."""
    seen = memo.get(("class", id(graph)))
    if seen is not None and seen[0]() is graph:
        return seen[1]
    coarse = (len(graph.nodes), tuple([n.type for n in graph]))
    peers = memo.setdefault(("peers", coarse), [])  # [weak ref, signature or None, class]
    cls = None
    sig = None
    if peers:
        sig = _graph_signature(graph)
        for peer in peers:
            if peer[1] is None:
                other = peer[0]()
                if other is None:  # gone: nothing can share its class any more
                    continue
                peer[1] = _graph_signature(other)
            if peer[1] == sig:
                cls = peer[2]
                break
    if cls is None:
        memo["classes"] = memo.get("classes", 0) + 1
        cls = ("graph class", memo["classes"])
    ref = weakref.ref(graph)
    peers.append([ref, sig, cls])
    memo[("class", id(graph))] = (ref, cls)
    return cls


def _graph_signature(graph: OpGraph) -> str:
    """A hashable description of everything kernel detection and features read from
    ``graph``: node types, source ops, shapes, attributes and links, in order."""
    index = {name: i for i, name in enumerate(graph.nodes)}
    return repr([(n.type, n.source_op, n.input_shapes, n.output_shapes,
                  sorted(n.attrs.items()), [index[i] for i in n.inputs]) for n in graph])
