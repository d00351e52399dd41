"""Shaped graphs of NAS-Bench-201 networks, as the engine sees them.

Each network is built with :func:`nnmeter_nas.search_spaces.nasbench201.build_nb201_network`
(C=16, N=5, 10 classes, ``none`` edges and dead edges dropped) and converted by the engine's own
front end (:func:`nnmeter_nas.graph.load_graph`, torch -> ONNX -> :class:`OpGraph`), so the
fitted kernels are exactly those the predictor later sees for these networks.

Why the pruned network: nn-Meter's TensorFlow generator builds every edge (``none`` as
``x * 0``), but the measured latencies behave as if ``none`` edges and edges that cannot reach
the cell output cost nothing (the converters fold ``x * 0`` and drop dead branches): fitted on
the pruned graphs, the additive kernel model's cross-validated RMSPE on the four devices is
several times lower than on graphs with every edge built
(``benchmarks/fit_nb201_predictors.py --explain`` prints the comparison).

Building a network in torch and reading it is slow next to :func:`nb201_graph_direct`, which
builds the same graph directly without torch (so a strategy can cost a cell with
``predictor.predict(nb201_graph_direct(arch_str))``).
"""
from __future__ import annotations

import json

from ..datasets.nb201 import live_edges
from ..graph import OpGraph, OpNode, load_graph

NB201_INPUT_SHAPE = (1, 3, 32, 32)


def build_nb201_graph(arch_str: str, C: int = 16, N: int = 5, num_classes: int = 10) -> OpGraph:
    """The shaped graph of the NAS-Bench-201 network of ``arch_str`` (benchmark setting C=16,
    N=5; input ``1x3x32x32``), through torch and ONNX export."""
    from ..search_spaces.nasbench201 import build_nb201_network

    net = build_nb201_network(arch_str, C=C, N=N, num_classes=num_classes)
    graph = load_graph(net, input_shape=NB201_INPUT_SHAPE)
    graph.name = arch_str
    return graph


class _GraphWriter:
    """Builds an :class:`OpGraph` node by node, merging identical parameter-free operators on
    the same inputs as the TorchScript ONNX exporter's common-subexpression elimination does
    (two ``nor_conv`` edges leaving one node share their ReLU)."""

    def __init__(self) -> None:
        self.nodes: dict[str, OpNode] = {}
        self.shape: dict[str, list[int]] = {}
        self._memo: dict[tuple, str] = {}

    def op(self, type_: str, inputs: list[str], out_shape: list[int], attrs: dict | None = None,
           *, pure: bool = True) -> str:
        attrs = dict(attrs or {})
        key = (type_, tuple(inputs), json.dumps(attrs, sort_keys=True))
        if pure and key in self._memo:
            return self._memo[key]
        name = f"{type_}_{len(self.nodes)}"
        uniq = list(dict.fromkeys(inputs))
        self.nodes[name] = OpNode(name=name, type=type_, inputs=uniq,
                                  input_shapes=[list(self.shape[i]) for i in inputs],
                                  output_shapes=[list(out_shape)], attrs=attrs)
        for i in uniq:
            self.nodes[i].outputs.append(name)
        self.shape[name] = list(out_shape)
        if pure:
            self._memo[key] = name
        return name

    def conv(self, x: str, cout: int, k: int, s: int) -> str:
        n, h, w, _ = self.shape[x]
        p = (k - 1) // 2
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self.op("conv", [x], [n, oh, ow, cout],
                       {"dilations": [1, 1], "group": 1, "pads": [p] * 4, "strides": [s, s],
                        "ks": [k, k]}, pure=False)

    def avgpool(self, x: str, k: int, s: int, p: int, count_include_pad: int) -> str:
        n, h, w, c = self.shape[x]
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self.op("avgpool", [x], [n, oh, ow, c],
                       {"ceil_mode": 0, "count_include_pad": count_include_pad,
                        "pads": [p] * 4, "strides": [s, s], "ks": [k, k]})

    def same(self, type_: str, inputs: list[str], attrs: dict | None = None) -> str:
        return self.op(type_, inputs, self.shape[inputs[0]], attrs)


def nb201_graph_direct(arch_str: str, C: int = 16, N: int = 5, num_classes: int = 10, *,
                       as_built_by_tf: bool = False) -> OpGraph:
    """The graph :func:`build_nb201_graph` returns, built directly (no torch network, no
    export): same operators, shapes, attributes and connections, hence the same kernels
    under any fusion rules (``tests/test_nb201_fit.py`` checks this against the torch export).
    Node names differ. Input ``1x3x32x32``; a cell without live edges is not supported.

    ``as_built_by_tf=True`` instead builds every edge of the cell, ``none`` as ``x * 0`` (a
    ``mul`` node), as nn-Meter's TensorFlow generator wrote the measured models; the fit does
    not use it (the measurements match the pruned graph), it is kept to show why."""
    from ..datasets.nb201 import normalize_arch_str, parse_arch_str

    arch_str = normalize_arch_str(arch_str)
    if as_built_by_tf:
        from ..datasets.nb201 import NB201_EDGES

        edges = [(s, d, op) for (s, d), op in zip(NB201_EDGES, parse_arch_str(arch_str))]
    else:
        edges = live_edges(parse_arch_str(arch_str))
    if not edges:
        raise ValueError(f"cell {arch_str} has no edge from its input to its output; "
                         "nb201_graph_direct does not model such networks (use build_nb201_graph)")
    g = _GraphWriter()
    g.nodes["input"] = OpNode(name="input", type="input", output_shapes=[[1, 32, 32, 3]])
    g.shape["input"] = [1, 32, 32, 3]
    x = g.conv("input", C, 3, 1)  # stem conv + BN (folded)
    channels = C
    for stage in range(3):
        if stage > 0:
            cout = channels * 2
            down = g.conv(g.avgpool(x, 2, 2, 0, 1), cout, 1, 1)
            a = g.conv(g.same("relu", [x]), cout, 3, 2)
            b = g.conv(g.same("relu", [a]), cout, 3, 1)
            x = g.same("add", [down, b])
            channels = cout
        for _ in range(N):
            nodes: dict[int, str] = {0: x}
            for src, dst, op in edges:
                t = nodes[src]
                if op == "skip_connect":
                    y = t
                elif op == "none":
                    y = g.same("mul", [t])
                elif op == "avg_pool_3x3":
                    y = g.avgpool(t, 3, 1, 1, 0)
                else:
                    y = g.conv(g.same("relu", [t]), channels, 1 if op == "nor_conv_1x1" else 3, 1)
                nodes[dst] = g.same("add", [nodes[dst], y]) if dst in nodes else y
            x = nodes[3]
    # The exporter folds the final BatchNorm into a convolution that directly produces the
    # last cell's output (the cell's own BatchNorm is folded already).
    if not (g.nodes[x].type == "conv" and not g.nodes[x].outputs):
        x = g.same("bn", [x])
    x = g.same("relu", [x])
    x = g.op("gap", [x], [1, 1, 1, channels])
    x = g.op("reshape", [x], [1, channels], {"axis": 1})
    g.op("fc", [x], [1, num_classes], pure=False)
    # The graph input is not a node in the engine's graphs: drop it.
    g.nodes.pop("input")
    for n in g.nodes.values():
        n.inputs = [i for i in n.inputs if i != "input"]
    graph = OpGraph(list(g.nodes.values()), name=arch_str)
    return graph
