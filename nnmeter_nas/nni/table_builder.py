"""Build a :class:`~nnmeter_nas.nni.table.LatencyTable` from a model space and predictors.

How: a few *covering* samples together hold every value combination of every choice point
(:func:`~nnmeter_nas.nni.choice_points.covering_samples`; 4 for SPOS). Each is frozen, exported
to ONNX once and turned into one shaped graph that all devices share. Each device's predictor
splits that graph into kernels and predicts them; a kernel belongs to the choice point whose
module produced its nodes (the exporter writes module scopes into the ONNX node names, e.g.
``/features/features.3/branch_main/branch_main.0/Conv``), or to the fixed part otherwise.

The result is exact when no kernel crosses a choice point's boundary and a choice point's
latency does not depend on labels outside it; the builder checks both across the covering
samples and records what it saw in ``table.meta["build"]``. A module outside the choice points
that only some architectures run (a branch the export drops when an InputChoice does not pick
its output) is charged to the InputChoice whose value tells when it runs; where no single one
does, the warning names the module.
"""
from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch.nn as nn

from .choice_points import (DEFAULT_MAX_COMBINATIONS, SpaceFreezer, SpaceLayout, covering_samples,
                            find_choice_points)
from ..errors import MissingRegressorError, UnsupportedOpError, UnsupportedSpaceError
from ..warn import warn
from ..packages.devices import resolve_predictors
from .table import LatencyTable, TablePoint
from .torch_threads import torch_threads

__all__ = ["build_latency_table", "ScopeResolver", "resolve_predictors", "point_owner_finder"]

_logger = logging.getLogger(__name__)


class ScopeResolver:
    """Map ONNX node names of a torch export back to module paths of the exported network.

    The TorchScript exporter names a node ``/scope1/scope2/.../OpType`` where each scope is the
    called module's name relative to the enclosing called module (containers that are never
    called, such as ``ModuleList``, may be folded into the next scope). Each scope is matched to
    the shallowest module below the current one whose dotted path ends with it.
    """

    def __init__(self, root: nn.Module) -> None:
        self._by_suffix: dict[str, list[str]] = defaultdict(list)
        for path, _ in root.named_modules():
            if not path:
                continue
            parts = path.split(".")
            for i in range(len(parts)):
                self._by_suffix[".".join(parts[i:])].append(path)
        self._cache: dict[str, str] = {}

    def module_path(self, node_name: str) -> str:
        """Module path that produced ``node_name`` (``""`` for the root or an unscoped node)."""
        if not node_name.startswith("/"):
            return ""
        scope = node_name[1:node_name.rfind("/")] if node_name.count("/") > 1 else ""
        hit = self._cache.get(scope)
        if hit is not None:
            return hit
        current = ""
        for comp in scope.split("/") if scope else []:
            candidates = [p for p in self._by_suffix.get(comp, ())
                          if not current or p.startswith(current + ".")]
            if not candidates:
                break
            current = min(candidates, key=lambda p: (p.count("."), len(p)))
        self._cache[scope] = current
        return current


def point_owner_finder(layout: SpaceLayout) -> Callable[[str], int]:
    """``owner(module_path)``: index of the choice point holding that module path of a frozen
    network, or -1 for the fixed part."""
    by_path = {p.frozen_path: i for i, p in enumerate(layout.points)}

    def owner(module_path: str) -> int:
        """Index of the choice point holding ``module_path``, or -1 for the fixed part."""
        path = module_path
        while path:
            hit = by_path.get(path)
            if hit is not None:
                return hit
            cut = path.rfind(".")
            path = path[:cut] if cut > 0 else ""
        return -1

    return owner


def _shape_of(x: Any) -> Any:
    if hasattr(x, "shape"):
        return [int(d) for d in x.shape]
    if isinstance(x, (list, tuple)):
        return [_shape_of(v) for v in x]
    return None


def _shape_recorder(seen: dict[int, Any], index: int) -> Callable:
    def hook(_module: nn.Module, args: tuple) -> None:  # must return None: keeps the inputs
        if index not in seen:
            seen[index] = _shape_of(args[0] if len(args) == 1 else list(args))
    return hook


@dataclass
class _Trace:
    """One covering architecture, traced: its shaped graph, the choice point owning each graph
    node (-1: fixed part), its combination index per choice point, the input shape each
    active choice point saw, and the module path of each graph node in the frozen network."""

    graph: Any
    node_owner: dict[str, int]
    combo_idx: list[int]
    seen_shapes: dict[int, Any]
    node_module: dict[str, str]


@dataclass
class _Attribution:
    """Predicted kernels of every traced architecture, charged to choice points or the fixed part.

    ``runs[r] = (combo_idx, points_ms, fixed_ms)`` with ``points_ms[i][d]`` the latency of choice
    point ``i`` on device ``d`` in architecture ``r`` and ``fixed_ms[d]`` its fixed part."""

    runs: list[tuple[list[int], list[list[float]], list[float]]]
    boundary: dict[tuple, int]
    reattributed: int
    dropped_branch_kernels: int = 0
    unexplained_modules: list[str] = field(default_factory=list)


def _trace(model_space: nn.Module, layout: SpaceLayout, samples: list[dict[str, Any]],
           input_shape: list[int], *, fast_freeze: bool, progress: bool) -> list[_Trace]:
    """Freeze, export and shape each covering sample once (shared by every device)."""
    from ..graph.onnx_import import onnx_to_graph
    from ..graph.torch_export import export_onnx

    freezer = SpaceFreezer(model_space) if fast_freeze else None
    owner = point_owner_finder(layout)
    space_name = type(model_space).__name__
    training = {id(m): m.training for m in model_space.modules()}
    iterator = samples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc=f"latency table {space_name}", unit="arch")
    traces = []
    try:
        for sample in iterator:
            _logger.debug("latency table of %s: covering architecture %s", space_name, sample)
            net = freezer.freeze(sample) if freezer else model_space.freeze(dict(sample))
            seen: dict[int, Any] = {}
            hooks = []
            for i, p in enumerate(layout.points):
                try:
                    mod = net.get_submodule(p.frozen_path)
                except AttributeError:
                    if p.combos.index(p.combo_of(sample)) in p.inactive:
                        continue
                    raise UnsupportedSpaceError(
                        f"{space_name}.freeze(sample) builds a network without a module at "
                        f"{p.frozen_path!r}, where the space has its {p.kind} {p.name!r}: the "
                        "space's own freeze lays the network out differently, so latencies "
                        "cannot be attributed to its choices. A latency table needs a space "
                        "frozen the standard NNI way (LayerChoice -> chosen candidate in place); "
                        "DirectLatencyProfiler predicts such spaces network by network."
                    ) from None
                hooks.append(mod.register_forward_pre_hook(_shape_recorder(seen, i)))
            try:
                with torch_threads(1):
                    proto = export_onnx(net, input_shape)
            except Exception as exc:
                raise UnsupportedSpaceError(
                    f"could not run {space_name} on input shape {tuple(input_shape)} (architecture "
                    f"{dict(sample)}): {exc}. Check that the input shape is the one the space is "
                    "built for.") from exc
            finally:
                for h in hooks:
                    h.remove()
            resolver = ScopeResolver(net)
            try:
                graph = onnx_to_graph(proto)
            except UnsupportedOpError as exc:
                raise UnsupportedOpError(
                    f"latency table of {space_name}: operator {exc.op!r} (node {exc.node!r}) "
                    f"{_where(layout, owner, resolver.module_path(exc.node), sample)} is not "
                    "supported by the latency engine, so no predictor can price it. Replace "
                    "that module with supported operators, or take it out of the model space and "
                    "add its latency to the budget yourself.", op=exc.op, node=exc.node
                ) from exc
            node_module = {name: resolver.module_path(name) for name in graph.nodes}
            node_owner = {name: owner(path) for name, path in node_module.items()}
            combo_idx = [p.combos.index(p.combo_of(sample)) for p in layout.points]
            traces.append(_Trace(graph, node_owner, combo_idx, seen, node_module))
    finally:
        for m in model_space.modules():
            m.training = training.get(id(m), m.training)
    return traces


def _where(layout: SpaceLayout, owner: Callable[[str], int], module_path: str,
           sample: Any) -> str:
    """``"at module 'a.b' (LayerChoice 'x': x='k5')"``: where a node of a frozen network lies."""
    i = owner(module_path) if module_path else -1
    where = f"at module {module_path!r}" if module_path else "outside any module"
    if i < 0:
        return f"{where} (fixed part)"
    p = layout.points[i]
    values = ", ".join(f"{label}={v!r}" for label, v in zip(p.labels, p.combo_of(sample)))
    return f"{where} ({p.kind} {p.name!r}: {values})"


def _predict_kernels(pred: Any, graph: Any) -> Any:
    """``pred.predict_kernels(graph)``, with kernels lacking a regressor kept (status
    ``missing``, 0 ms) and not warned about: the table builder names them itself."""
    if getattr(pred, "strict", False):
        import copy

        pred = copy.copy(pred)
        pred.strict = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*has no regressor for kernel types")
        return pred.predict_kernels(graph)


def _check_missing(missing: dict[str, dict[tuple, None]], preds: list[Any], space_name: str,
                   allow_missing: bool) -> None:
    """Refuse (or, with ``allow_missing``, warn about) kernels some device cannot price."""
    if not missing:
        return
    lines = []
    for device, items in missing.items():
        by_place: dict[str, list[str]] = {}
        for kernel_type, ops, at in items:
            by_place.setdefault(at, []).append(f"{kernel_type!r} ({ops})")
        places = [f"{at}: {', '.join(kinds)}" for at, kinds in by_place.items()]
        more = f"; and {len(places) - 6} more places" if len(places) > 6 else ""
        lines.append(f"{device}: {'; '.join(places[:6])}{more}")
    strict = [p.device for p in preds if getattr(p, "strict", False) and p.device in missing]
    text = (f"latency table of {space_name}: no regressor for these kernels on these devices, "
            f"which would count as 0 ms -- {' | '.join(lines)}. A choice priced at 0 ms looks "
            "free to the search, and budgets would be met on paper only.")
    if allow_missing and not strict:
        from ..errors import LatencyWarning

        warn(text + " Counted as 0 ms (allow_missing=True).", LatencyWarning)
        return
    raise MissingRegressorError(
        text + " Use a predictor that covers these kernel types (`nnmeter-nas predictors "
        "list`), replace those modules with operators the predictor prices, or pass "
        "allow_missing=True (`nnmeter-nas lut --allow-missing`; with a predictor loaded with "
        "strict=False) to count them as 0 ms with a warning.")


def _attribute(traces: list[_Trace], preds: list[Any], layout: SpaceLayout,
               samples: list[dict[str, Any]], space_name: str = "the space", *,
               allow_missing: bool = False) -> _Attribution:
    """Predict each trace's kernels on each device and charge each kernel to the choice point
    that owns its first node (or to the fixed part). Kernels some device has no regressor for
    are refused unless ``allow_missing``."""
    n_points = len(layout.points)
    owner_of = point_owner_finder(layout)
    boundary: dict[tuple, int] = defaultdict(int)
    absorbed: dict[str, set[int]] = defaultdict(set)
    missing: dict[str, dict[tuple, None]] = {}  # device -> ordered set of (type, ops, where)
    predicted = []  # per trace, per device: (owner of the first node, nodes, ms)
    for tr, sample in zip(traces, samples):
        records = []
        for pred in preds:
            dev_records = []
            for kp in _predict_kernels(pred, tr.graph):
                if kp.status == "missing":
                    ops = "/".join(dict.fromkeys(
                        str(tr.graph.nodes[n].source_op or tr.graph.nodes[n].type)
                        for n in kp.nodes if n in tr.graph.nodes)) or kp.kernel_type
                    path = tr.node_module.get(kp.nodes[0], "") if kp.nodes else ""
                    missing.setdefault(pred.device, {})[
                        (kp.kernel_type, ops, _where(layout, owner_of, path, sample))] = None
                owners = [tr.node_owner.get(n, -1) for n in kp.nodes]
                first = owners[0] if owners else -1
                if len(set(owners)) > 1:
                    boundary[(kp.kernel_type, tuple(sorted(set(owners))))] += 1
                    if first >= 0:  # fixed nodes fused into a choice point's kernel
                        for n, o in zip(kp.nodes, owners):
                            if o < 0:
                                absorbed[n].add(first)
                dev_records.append((first, tuple(kp.nodes), kp.latency_ms))
            records.append(dev_records)
        predicted.append(records)
    _check_missing(missing, preds, space_name, allow_missing)

    # A fixed node that some architectures fuse into a choice point's kernel (e.g. a ReLU after a
    # LayerChoice ending in a conv) runs as a kernel of its own in the others (the choice is a
    # skip): its cost depends on that choice, so it is charged to the choice point there too.
    # Only kernels made entirely of such nodes move; anything else stays fixed and shows up in
    # the fixed-part spread.
    reattributed = 0
    resolved = []  # per trace, per device: (owner, nodes, ms) after that move
    for records in predicted:
        per_device = []
        for dev_records in records:
            out = []
            for first, nodes, latency in dev_records:
                if first < 0 and nodes and all(n in absorbed for n in nodes):
                    hosts = set().union(*(absorbed[n] for n in nodes))
                    if len(hosts) == 1:
                        first = next(iter(hosts))
                        reattributed += 1
                out.append((first, nodes, latency))
            per_device.append(out)
        resolved.append(per_device)
    moved, unexplained = _dropped_branches(traces, resolved, layout)
    runs = []
    for r, (tr, records) in enumerate(zip(traces, resolved)):
        run_pts = [[0.0] * len(preds) for _ in range(n_points)]
        # A package's constant per-network cost belongs to the fixed part.
        run_fixed = [float(getattr(p, "network_overhead_ms", 0.0)) for p in preds]
        for d, dev_records in enumerate(records):
            for first, nodes, latency in dev_records:
                if first < 0:
                    first = moved.get((d, nodes), -1)
                if first < 0:
                    run_fixed[d] += latency
                else:
                    run_pts[first][d] += latency
        runs.append((tr.combo_idx, run_pts, run_fixed))
    return _Attribution(runs, dict(boundary), reattributed, len(moved), unexplained)


def _dropped_branches(traces: list[_Trace], resolved: list[list[list[tuple]]],
                      layout: SpaceLayout) -> tuple[dict[tuple, int], list[str]]:
    """Fixed kernels that some architectures have and others lack.

    The export drops a branch whose output nothing uses, e.g. a module outside an InputChoice
    whose output the choice did not pick: its kernels then exist only for some values of that
    choice, so their cost is the choice's. A kernel moves to the one InputChoice whose value
    tells, in every traced architecture, whether the kernel is there. Returns ``{(device
    index, kernel nodes): point index}`` and the module paths of such kernels that no single
    InputChoice explains (they stay in the fixed part, whose spread then shows them).
    """
    n_traces = len(traces)
    inputs = [i for i, p in enumerate(layout.points) if p.kind == "InputChoice"]
    moved: dict[tuple, int] = {}
    unexplained: dict[str, None] = {}
    for d in range(len(resolved[0]) if resolved else 0):
        present: dict[tuple, set[int]] = defaultdict(set)
        for r, per_device in enumerate(resolved):
            for first, nodes, _ in per_device[d]:
                if first < 0 and nodes:
                    present[nodes].add(r)
        for nodes, where in present.items():
            if len(where) == n_traces:
                continue
            explains = []
            for i in inputs:
                seen: dict[int, bool] = {}
                if all(seen.setdefault(tr.combo_idx[i], r in where) == (r in where)
                       for r, tr in enumerate(traces)):
                    explains.append(i)
            if len(explains) == 1:
                moved[(d, nodes)] = explains[0]
            else:
                r = next(iter(where))
                unexplained[traces[r].node_module.get(nodes[0], "") or nodes[0]] = None
    return moved, list(unexplained)


def _assemble(layout: SpaceLayout, traces: list[_Trace], attribution: _Attribution,
              preds: list[Any], input_shape: list[int]) -> LatencyTable:
    """The table: one entry per combination (from the first architecture that shows it), the
    fixed part as the median over architectures; ``meta["build"]`` records the spreads (ms)
    across architectures."""
    devices = [p.device for p in preds]
    n_pts, n_dev = len(layout.points), len(devices)
    ms: list[dict[int, list[float]]] = [dict() for _ in range(n_pts)]
    spread = [defaultdict(float) for _ in range(n_pts)]
    shapes: list[dict[int, Any]] = [dict() for _ in range(n_pts)]
    for tr in traces:
        for i, p in enumerate(layout.points):
            k = tr.combo_idx[i]
            if k in p.inactive:
                continue
            shape = tr.seen_shapes.get(i)
            if k in shapes[i] and shapes[i][k] != shape:
                raise UnsupportedSpaceError(
                    f"the input of {p.kind} {p.name!r} has shape {shapes[i][k]} in one "
                    f"architecture and {shape} in another with the same {list(p.labels)}: it "
                    "depends on choices outside it, so a per-choice latency table would be "
                    "wrong for this space")
            shapes[i].setdefault(k, shape)
    fixed_runs = []
    for combo_idx, run_pts, run_fixed in attribution.runs:
        fixed_runs.append(run_fixed)
        for i, p in enumerate(layout.points):
            k = combo_idx[i]
            if k in p.inactive:
                if any(run_pts[i]):
                    raise UnsupportedSpaceError(
                        f"{p.kind} {p.name!r} should be absent for "
                        f"{dict(zip(p.labels, p.combos[k]))} but kernels were attributed to it")
                continue
            if k in ms[i]:
                for d in range(n_dev):
                    spread[i][k] = max(spread[i][k], abs(ms[i][k][d] - run_pts[i][d]))
            else:
                ms[i][k] = run_pts[i]

    points = []
    for i, p in enumerate(layout.points):
        rows = [ms[i].get(k, [0.0] * n_dev) for k in range(len(p.combos))]
        active = [k not in p.inactive for k in range(len(p.combos))]
        known = [shapes[i][k] for k in sorted(shapes[i])]
        points.append(TablePoint(p.name, p.frozen_path, p.kind, p.labels, list(p.combos), rows,
                                 active, known[0] if known and all(s == known[0] for s in known)
                                 else known or None))
    fixed = {dev: statistics.median(run[d] for run in fixed_runs) for d, dev in enumerate(devices)}
    fixed_spread = {dev: max(run[d] for run in fixed_runs) - min(run[d] for run in fixed_runs)
                    for d, dev in enumerate(devices)}
    entry_spread = max((v for s in spread for v in s.values()), default=0.0)
    build = {
        "covering_samples": len(traces),
        "fixed_spread_ms": fixed_spread,
        "max_entry_spread_ms": entry_spread,
        "boundary_kernels": [{"kernel_type": t, "owners": [layout.points[o].name if o >= 0
                                                          else "fixed" for o in owners],
                              "count": c} for (t, owners), c in sorted(attribution.boundary.items())],
        "reattributed_fixed_kernels": attribution.reattributed,
        "dropped_branch_kernels": attribution.dropped_branch_kernels,
        "modules_in_some_architectures_only": attribution.unexplained_modules,
    }
    meta = {
        "predictors": {p.device: {"name": getattr(p, "name", ""),
                                  "version": getattr(p, "version", ""),
                                  "calibration": getattr(p, "calibration", None)}
                       for p in preds},
        "build": build,
    }
    return LatencyTable(devices=devices, input_shape=input_shape, space=layout.signature(),
                        points=points, fixed_ms=fixed, meta=meta)


def build_latency_table(model_space: nn.Module, predictors: Any,
                        input_shape: Sequence[int], *,
                        max_combinations: int = DEFAULT_MAX_COMBINATIONS,
                        progress: bool = False, fast_freeze: bool = True,
                        allow_missing: bool = False) -> LatencyTable:
    """Latency table of ``model_space`` for each predictor's device, at ``input_shape`` (NCHW).

    Three steps: trace the covering architectures (freeze, export, shape; once for all
    devices), attribute each device's predicted kernels to choice points or the fixed part,
    and assemble the table.

    Parameters
    ----------
    model_space : nni.nas.nn.pytorch.ModelSpace
        The space; its choices must be categorical.
    predictors : LatencyPredictor, str or list of those
        A predictor, a predictor name, or a list (see
        :func:`~nnmeter_nas.packages.devices.resolve_predictors`).
    input_shape : sequence of 4 int
        NCHW input of the networks.
    max_combinations : int, default=256
        Most value combinations one choice point may have.
    progress : bool, default=False
        Show a progress bar over the covering architectures.
    fast_freeze : bool, default=True
        False uses NNI's ``model_space.freeze`` (re-runs ``__init__``; slower).
    allow_missing : bool, default=False
        Count kernels a predictor has no regressor for as 0 ms, with a warning naming them,
        instead of raising :class:`~nnmeter_nas.errors.MissingRegressorError`.

    Raises
    ------
    UnsupportedSpaceError
        For spaces it cannot tabulate or an input shape the space does not run on.
    UnsupportedOpError
        For an operator the latency engine cannot read (naming it and its module).
    MissingRegressorError
        For kernels a predictor has no regressor for (naming them, their module and choice),
        unless ``allow_missing``.
    """
    t0 = time.perf_counter()
    preds = resolve_predictors(predictors)
    input_shape = [int(d) for d in input_shape]
    layout = find_choice_points(model_space, max_combinations=max_combinations)
    samples = covering_samples(layout)
    traces = _trace(model_space, layout, samples, input_shape, fast_freeze=fast_freeze,
                    progress=progress)
    attribution = _attribute(traces, preds, layout, samples, type(model_space).__name__,
                             allow_missing=allow_missing)
    table = _assemble(layout, traces, attribution, preds, input_shape)
    build = table.meta["build"]
    table.meta["build"] = {"covering_samples": build.pop("covering_samples"),
                           "seconds": round(time.perf_counter() - t0, 3), **build,
                           "freeze": "SpaceFreezer" if fast_freeze else "model_space.freeze"}
    worst = max(build["fixed_spread_ms"].values())
    entry_spread = build["max_entry_spread_ms"]
    if worst > 1e-6 * max(1.0, max(table.fixed_ms.values())) or entry_spread > 1e-6:
        partial = build["modules_in_some_architectures_only"]
        cached = [p.device for p in preds if getattr(p, "uses_cache_model", False)]
        varying = {d for d, ms in build["fixed_spread_ms"].items()
                   if ms > 1e-6 * max(1.0, table.fixed_ms[d])}
        if partial:
            why = (" Modules outside the choice points that only some architectures run (a "
                   f"branch the export drops when nothing uses its output): {partial[:8]}; put "
                   "them inside the choice (e.g. a LayerChoice of the branches), or use "
                   "DirectLatencyProfiler, which predicts each network whole.")
        elif cached and varying <= set(cached):
            why = (f" The cache model of {cached} prices every kernel by the whole network's "
                   "weight size, which the choices change: the table sums kernels priced at "
                   "the covering architectures' sizes, so it approximates those devices "
                   "(DirectLatencyProfiler predicts each network whole).")
        else:
            why = " Some layers outside the choice points depend on the choices."
        warn(
            f"latency table of {type(model_space).__name__}: the fixed part varies by up to "
            f"{worst:.4g} ms and a choice entry by up to {entry_spread:.4g} ms across "
            f"architectures (see table.meta['build']).{why}", RuntimeWarning)
    return table
