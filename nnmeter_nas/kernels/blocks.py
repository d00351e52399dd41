"""Detection of nn-Meter's multi-operator blocks on an :class:`OpGraph`.

Each detector returns groups of node names that run as one kernel:

- ``hswish``: ``x * hardsigmoid(x)``, ``x * relu6(x + 3) / 6`` (with ``Clip`` or ``Relu6``, a
  division or a multiplication by 1/6), or a single ``HardSwish`` node.
- ``se``: squeeze-and-excitation, ``x * gate(conv(relu(conv(gap(x)))))`` where the gate is a
  (hard) sigmoid, the convolutions may be fully connected layers around a reshape.
- ``channelshuffle``: reshape -> transpose -> reshape (and the gathers that split its result
  when the network indexes it, as NNI's ShuffleNet does).
- ``gap``: global average pooling, together with the flatten/reshape that directly follows it.
"""
from __future__ import annotations

from ..graph.ir import OpGraph, OpNode


def _only_consumer(g: OpGraph, node: OpNode) -> OpNode | None:
    return g[node.outputs[0]] if len(node.outputs) == 1 else None


def _hsigmoid_chain(g: OpGraph, start: OpNode) -> list[str] | None:
    """Nodes of a hard-sigmoid computed from ``start``: ``hardsigmoid``, ``sigmoid`` or
    ``add -> relu(6) -> div|mul`` (returns the chain, its last node produces the gate)."""
    if start.type in ("hardsigmoid", "sigmoid"):
        return [start.name]
    if start.type == "add" and len(start.input_shapes) == 1:  # x + constant
        relu = _only_consumer(g, start)
        if relu is not None and relu.type == "relu":
            scale = _only_consumer(g, relu)
            if scale is not None and scale.type in ("div", "mul") and len(scale.inputs) == 1:
                return [start.name, relu.name, scale.name]
    return None


def _is_gated_by(mul: OpNode, gate: str, source: OpNode) -> bool:
    """``mul`` multiplies ``source``'s input by the output of ``gate``."""
    return mul.type == "mul" and gate in mul.inputs and \
        set(mul.inputs) - {gate} == set(source.inputs)


def find_hswish(g: OpGraph, taken: set[str]) -> list[list[str]]:
    groups = []
    for node in g:
        if node.name in taken or node.type not in ("hardsigmoid", "add") or \
                len(node.input_shapes) != 1:
            continue
        group: list[str] | None = None
        chain = _hsigmoid_chain(g, node)
        if chain is not None:
            mul = _only_consumer(g, g[chain[-1]])
            if mul is not None and _is_gated_by(mul, chain[-1], node):
                group = chain + [mul.name]
        elif node.type == "add":
            # x * relu6(x + 3), then / 6 (or * 1/6)
            relu = _only_consumer(g, node)
            mul = _only_consumer(g, relu) if relu is not None and relu.type == "relu" else None
            if mul is not None and _is_gated_by(mul, relu.name, node):
                scale = _only_consumer(g, mul)
                if scale is not None and scale.type in ("div", "mul") and \
                        len(scale.inputs) == 1:
                    group = [node.name, relu.name, mul.name, scale.name]
        if group and taken.isdisjoint(group):
            groups.append(group)
            taken.update(group)
    return groups


def find_se(g: OpGraph, taken: set[str]) -> list[list[str]]:
    groups = []
    for node in g:
        if node.type != "gap" or node.name in taken or len(node.inputs) > 1:
            continue
        group = [node.name]
        cur = _only_consumer(g, node)
        if cur is not None and cur.type == "reshape":
            group.append(cur.name)
            cur = _only_consumer(g, cur)
        if cur is None or cur.type not in ("conv", "fc"):
            continue
        group.append(cur.name)
        relu = _only_consumer(g, cur)
        if relu is None or relu.type != "relu":
            continue
        group.append(relu.name)
        conv2 = _only_consumer(g, relu)
        if conv2 is None or conv2.type not in ("conv", "fc"):
            continue
        group.append(conv2.name)
        nxt = _only_consumer(g, conv2)
        if nxt is None:
            continue
        gate = _hsigmoid_chain(g, nxt)
        if gate is None:
            continue
        group.extend(gate)
        cur = _only_consumer(g, g[gate[-1]])
        if cur is not None and cur.type == "reshape":
            group.append(cur.name)
            cur = _only_consumer(g, cur)
        if cur is None or not _is_gated_by(cur, group[-1], node):
            continue
        group.append(cur.name)
        if taken.isdisjoint(group):
            groups.append(group)
            taken.update(group)
    return groups


def find_channelshuffle(g: OpGraph, taken: set[str]) -> list[list[str]]:
    groups = []
    for node in g:
        if node.type != "reshape" or node.name in taken:
            continue
        tr = _only_consumer(g, node)
        if tr is None or tr.type != "transpose":
            continue
        back = _only_consumer(g, tr)
        if back is None or back.type != "reshape":
            continue
        group = [node.name, tr.name, back.name]
        # NNI's ShuffleNet splits the shuffled tensor by indexing its first axis (x[0], x[1]):
        # those gathers are the block's outputs, not kernels of their own.
        if back.outputs and all(g[o].type == "gather" and g[o].inputs == [back.name]
                                for o in back.outputs):
            group += back.outputs
        if taken.isdisjoint(group):
            groups.append(group)
            taken.update(group)
    return groups


def find_gap(g: OpGraph, taken: set[str]) -> list[list[str]]:
    groups = []
    for node in g:
        if node.type != "gap" or node.name in taken:
            continue
        nxt = _only_consumer(g, node)
        if nxt is not None and nxt.type == "reshape" and nxt.name not in taken:
            groups.append([node.name, nxt.name])
            taken.update(groups[-1])
    return groups


# Order matters: se contains a gap and a hard sigmoid, so it is matched first.
BLOCK_FINDERS = (("se", find_se), ("hswish", find_hswish),
                 ("channelshuffle", find_channelshuffle), ("gap", find_gap))
