"""FLOPs and parameter counts of candidates: per frozen network, and as an additive table.

Conventions (the same in ``table`` and ``full`` scoring):

- ``flops`` = 2 x the multiply-accumulates of the ``Conv2d`` and ``Linear`` layers for one
  input of the space's input shape (batch norms, activations, pooling and element-wise ops are
  not counted; a convolution's bias is not counted);
- ``params`` = number of parameters of the frozen network (batch-norm affine weights included).

Imports torch (and NNI through the choice points).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..nni.torch_threads import torch_threads
from .codes import LabelSpace
from .lookup import CodeTable
from ..warn import warn

__all__ = ["count_costs", "module_costs", "graph_and_costs", "build_cost_table", "COST_COLUMNS",
           "torch_threads"]

COST_COLUMNS = ["flops", "params"]


def _hooked_costs(net: nn.Module, run: Callable[[], Any]) -> tuple[dict[str, list[float]], Any]:
    """``({module path: [flops, params]}, run())``: ``run`` is one forward pass of ``net``
    (real or shape-only) during which the Conv2d/Linear layers' work is counted."""
    from ..graph.torch_frontend import traced_shape

    paths = {id(m): p for p, m in net.named_modules()}
    out: dict[str, list[float]] = {}
    for path, m in net.named_modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if own:
            out.setdefault(path, [0.0, 0.0])[1] += float(own)

    def on_conv(m: nn.Conv2d, _inp: Any, y: torch.Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1]
        macs = math.prod(traced_shape(y)) * (m.in_channels // m.groups) * k
        out.setdefault(paths[id(m)], [0.0, 0.0])[0] += 2.0 * macs

    def on_linear(m: nn.Linear, _inp: Any, y: torch.Tensor) -> None:
        out.setdefault(paths[id(m)], [0.0, 0.0])[0] += \
            2.0 * math.prod(traced_shape(y)) * m.in_features

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(on_linear))
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return out, result


def _real_forward(net: nn.Module, input_shape: Sequence[int]) -> Callable[[], None]:
    def run() -> None:
        was_training = net.training
        try:
            net.eval()
            with torch.no_grad():
                net(torch.zeros(*[int(d) for d in input_shape]))
        finally:
            net.train(was_training)
    return run


def module_costs(net: nn.Module, input_shape: Sequence[int], *,
                 shape_only: bool = True) -> dict[str, list[float]]:
    """``{module path: [flops, params]}`` of the modules of ``net`` that have any, where
    ``params`` counts only the module's own parameters and ``flops`` its own Conv2d/Linear
    work (summed over calls). ``input_shape`` is NCHW.

    The layers are counted during the torch front end's shape-only forward pass (no data,
    no arithmetic); a network the front end cannot run (``TorchFrontEndError``), or
    ``shape_only=False``, gets a real forward pass on zeros instead (same counts).
    """
    if shape_only:
        from ..errors import TorchFrontEndError
        from ..graph.torch_frontend import torch_to_graph

        try:
            return _hooked_costs(net, lambda: torch_to_graph(net, input_shape))[0]
        except TorchFrontEndError:
            pass
    return _hooked_costs(net, _real_forward(net, input_shape))[0]


def _totals(costs: dict[str, list[float]]) -> tuple[float, float]:
    return (float(sum(v[0] for v in costs.values())), float(sum(v[1] for v in costs.values())))


def count_costs(net: nn.Module, input_shape: Sequence[int]) -> tuple[float, float]:
    """``(flops, params)`` of a frozen network (see the module docstring for the convention)."""
    return _totals(module_costs(net, input_shape))


def graph_and_costs(net: nn.Module, input_shape: Sequence[int]) -> tuple[Any, float, float]:
    """``(graph, flops, params)`` of a frozen network from one shape-only forward pass: the
    :class:`~nnmeter_nas.graph.OpGraph` ``load_graph(net, input_shape=...)`` gives, and the
    costs :func:`count_costs` gives.

    A network the torch front end cannot read is exported to ONNX as ``load_graph`` does
    (with its ``TorchFallbackWarning``) and counted with a real forward pass.
    """
    from ..errors import TorchFrontEndError
    from ..graph import load_graph

    try:
        costs, graph = _hooked_costs(net, lambda: load_graph(net, input_shape=input_shape,
                                                             torch_frontend="trace"))
    except TorchFrontEndError:
        graph = load_graph(net, input_shape=input_shape)
        costs = module_costs(net, input_shape, shape_only=False)
    return (graph, *_totals(costs))


def _owner(points: Sequence[Any]) -> Callable[[str], int]:
    by_path = {p.frozen_path: i for i, p in enumerate(points)}

    def owner(path: str) -> int:
        while path:
            if path in by_path:
                return by_path[path]
            cut = path.rfind(".")
            path = path[:cut] if cut > 0 else ""
        return -1

    return owner


def build_cost_table(model_space: nn.Module, input_shape: Sequence[int], *,
                     layout: Any = None) -> CodeTable:
    """Additive ``flops``/``params`` table of ``model_space`` (an NNI 3 model space).

    Every module's costs go to the choice point whose frozen path contains it, or to the fixed
    part; the covering samples of the space's choice points fill every entry. Exact for spaces
    whose frozen networks are the choice points' modules plus a fixed part (SPOS); spaces whose
    ``freeze`` prunes modules by combinations of choices (NAS-Bench-201 drops edges cut off from
    the cell's output) get the cost of the unpruned layout, which ``full`` scoring does not.
    """
    from ..nni.choice_points import SpaceFreezer, covering_samples, find_choice_points

    layout = layout or find_choice_points(model_space)
    space = LabelSpace.from_label_values(layout.label_values)
    freezer = SpaceFreezer(model_space)
    owner = _owner(layout.points)
    entries: list[dict[int, list[float]]] = [dict() for _ in layout.points]
    fixed_runs = []
    for sample in covering_samples(layout):
        net = freezer.freeze(sample)
        per_point = [[0.0, 0.0] for _ in layout.points]
        fixed = [0.0, 0.0]
        with torch_threads(1):
            costs = module_costs(net, input_shape)
        for path, (flops, params) in costs.items():
            i = owner(path)
            target = fixed if i < 0 else per_point[i]
            target[0] += flops
            target[1] += params
        fixed_runs.append(fixed)
        for i, p in enumerate(layout.points):
            k = p.combos.index(p.combo_of(sample))
            entries[i].setdefault(k, [0.0, 0.0] if k in p.inactive else per_point[i])
    if any(run != fixed_runs[0] for run in fixed_runs):
        warn(f"FLOPs/params of the fixed part of {type(model_space).__name__} vary "
             f"between architectures ({fixed_runs}); the table uses the first",
             RuntimeWarning)
    points = []
    for i, p in enumerate(layout.points):
        rows = [entries[i].get(k, [0.0, 0.0]) for k in range(len(p.combos))]
        points.append((p.name, p.labels, p.combos, rows))
    return CodeTable.from_points(space, COST_COLUMNS, fixed_runs[0], points,
                                 meta={"source": "build_cost_table",
                                       "space": type(model_space).__name__})


def costs_array(nets: Sequence[nn.Module], input_shape: Sequence[int]) -> np.ndarray:
    """``(n, 2)`` array of ``[flops, params]`` per network."""
    return np.array([count_costs(n, input_shape) for n in nets], dtype=np.float64).reshape(-1, 2)
