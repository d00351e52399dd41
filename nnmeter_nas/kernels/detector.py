"""Split a shaped graph into kernels by a device's fusion rules (nn-Meter's algorithm).

1. Multi-operator blocks (``BF_a_b_c`` chains, then se, hswish, channelshuffle, gap) are
   collapsed into one unit each.
2. Walking the units in topological order, a unit whose type fuses with its single consumer's
   type (``BF_a_b``) absorbs it; the absorbed unit's consumers become its own and the same unit
   is tried again, so ``conv -> bn -> relu`` becomes one ``conv-bn-relu`` kernel when both
   ``BF_conv_bn`` and ``BF_conv_relu`` hold (the first operator's type decides every step).
3. Each group is a :class:`Kernel` whose type joins the operator types with ``-`` and whose
   shapes and attributes are those of its first operator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..graph.ir import OpGraph
from .blocks import BLOCK_FINDERS
from .fusion_rules import FusionRules


@dataclass
class Kernel:
    """One fused kernel. Shapes are NHWC for 4-D tensors; ``input_shapes``/``output_shapes``
    and ``attrs`` (``ks``, ``strides``, ``group``...) are those of the kernel's first operator."""

    name: str
    type: str
    nodes: list[str]
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)   # producer kernels
    outputs: list[str] = field(default_factory=list)  # consumer kernels


class _Unit:
    """One operator or multi-operator block before fusion (a plain class with slots: one is
    made per graph node); ``outputs``: the indices of its consumer units."""

    __slots__ = ("type", "nodes", "root", "outputs")

    def __init__(self, type: str, nodes: list[str], root: str) -> None:  # noqa: A002
        self.type = type
        self.nodes = nodes
        self.root = root
        self.outputs: set[int] = set()


def _chain_matches(g: OpGraph, chain: tuple[str, ...], taken: set[str]) -> list[list[str]]:
    groups = []
    for node in g:
        if node.type != chain[0] or node.name in taken:
            continue
        group = [node.name]
        cur = node
        for t in chain[1:]:
            if len(cur.outputs) != 1 or g[cur.outputs[0]].type != t:
                break
            cur = g[cur.outputs[0]]
            group.append(cur.name)
        if len(group) == len(chain) and taken.isdisjoint(group):
            groups.append(group)
            taken.update(group)
    return groups


def _root(g: OpGraph, group: list[str]) -> str:
    members = set(group)
    for name in group:
        if not any(i in members for i in g[name].inputs):
            return name
    return group[0]


def _build_units(g: OpGraph, rules: FusionRules) -> list[_Unit]:
    taken: set[str] = set()
    blocks: list[tuple[str, list[str]]] = []
    for chain in rules.chains:
        blocks += [("-".join(chain), grp) for grp in _chain_matches(g, chain, taken)]
    for block_type, finder in BLOCK_FINDERS:
        blocks += [(block_type, grp) for grp in finder(g, taken)]
    gnodes = g.nodes
    unit_of: dict[str, int]
    if not blocks:  # one unit per node, in the graph's (topological) order
        units = [_Unit(node.type, [name], name) for name, node in gnodes.items()]
        unit_of = {name: i for i, name in enumerate(gnodes)}
    else:
        unit_of = {}
        units = []
        block_of = {n: i for i, (_, grp) in enumerate(blocks) for n in grp}
        emitted: set[int] = set()
        pos = {name: i for i, name in enumerate(gnodes)}
        for node in g:  # units in topological order of their first node
            b = block_of.get(node.name)
            if b is None:
                unit_of[node.name] = len(units)
                units.append(_Unit(node.type, [node.name], node.name))
            elif b not in emitted:
                emitted.add(b)
                btype, grp = blocks[b]
                order = sorted(dict.fromkeys(grp), key=pos.__getitem__)
                idx = len(units)
                units.append(_Unit(btype, order, _root(g, order)))
                for n in grp:
                    unit_of[n] = idx
    for i, u in enumerate(units):
        add = u.outputs.add
        for n in u.nodes:
            for o in gnodes[n].outputs:
                j = unit_of[o]
                if j != i:
                    add(j)
    return units


def detect_kernels(graph: OpGraph, rules: FusionRules | None = None) -> list[Kernel]:
    """Kernels of ``graph`` under ``rules`` (default: :meth:`FusionRules.default`)."""
    rules = rules or FusionRules.default()
    units = _build_units(graph, rules)
    n = len(units)
    parent = list(range(n))
    outs = [u.outputs for u in units]  # (replaced, never changed in place, below)
    types = [u.type for u in units]
    mon = rules.mon
    if type(rules).is_fusible is FusionRules.is_fusible:
        pairs = rules.pairs

        def fusible(a: str, b: str) -> bool:
            return (a, b) in pairs
    else:
        fusible = rules.is_fusible

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # (find(x) == x exactly where parent[x] == x: a root is its own parent)
    i = 0
    while i < n:
        out_i = outs[i]
        if parent[i] != i or not out_i or (mon == 0 and len(out_i) > 1):
            i += 1
            continue
        fused = False
        ti = types[i]
        for j in (out_i if len(out_i) == 1 else sorted(out_i)):
            if parent[j] != j or not fusible(ti, types[j]):
                continue
            parent[j] = i
            if mon == 0:
                outs[i] = set(outs[j])
            else:
                outs[i] = (outs[i] - {j}) | outs[j]
            fused = True
            if mon == 1:
                break
        if not fused:
            i += 1

    root_of = [find(k) for k in range(n)]
    members: dict[int, list[int]] = {}
    for k in range(n):
        r = root_of[k]
        ks = members.get(r)
        if ks is None:
            members[r] = [k]
        else:
            ks.append(k)
    kernels: list[Kernel] = []
    kernel_of: dict[int, Kernel] = {}
    gnodes = graph.nodes
    clip_relus = {nd.name for nd in gnodes.values()
                  if nd.type == "relu" and getattr(nd, "source_op", None) == "Clip"}
    for idx, (root, ks) in enumerate(sorted(members.items())):
        first = units[root]
        node = gnodes[first.root]
        if len(ks) == 1:
            ktype = first.type
            nodes = list(first.nodes)
        else:
            ktype = "-".join([types[k] for k in ks])
            nodes = [nm for k in ks for nm in units[k].nodes]
        in_shapes = [list(s) for s in node.input_shapes]
        if first.type == "hswish":
            in_shapes = in_shapes[:1]
        attrs = dict(node.attrs)
        # ReLU6 arrives as Clip and is typed relu (nn-Meter's fusion rules know only relu); a
        # runtime may fuse the two differently, so the kernel says which it holds.
        if clip_relus and not clip_relus.isdisjoint(nodes):
            attrs["relu6"] = True
        kernel = Kernel(f"{ktype}#{idx}", ktype, nodes, in_shapes,
                        [list(s) for s in node.output_shapes], attrs, [], [])
        kernels.append(kernel)
        kernel_of[root] = kernel
    for root, ks in members.items():
        src = kernel_of[root]
        src_outputs, src_name = src.outputs, src.name
        for k in ks:
            for o in units[k].outputs:
                r = root_of[o]
                if r != root:
                    dst = kernel_of[r]
                    if dst.name not in src_outputs:
                        src_outputs.append(dst.name)
                        dst.inputs.append(src_name)
    return kernels
