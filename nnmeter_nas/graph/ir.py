"""The shaped operator graph every front end produces, and nn-Meter IR conversion.

Shapes follow nn-Meter: 4-D tensors are NHWC lists of ints (ONNX's NCHW is transposed on
import), other ranks are kept as they are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelFormatError

Shape = list  # list[int]


@dataclass(slots=True)
class OpNode:
    """One operator of a shaped graph.

    ``type`` is nn-Meter's canonical lower-case type (``conv``, ``dwconv``, ``bn``, ``relu``,
    ``add``, ``concat``, ``fc``, ``gap``, ``hswish``...). ``inputs``/``outputs`` name the
    producer/consumer nodes (graph inputs and constants are not nodes). ``input_shapes`` and
    ``output_shapes`` list the shapes of the node's non-constant input tensors and its outputs.
    """

    name: str
    type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_shapes: list[Shape] = field(default_factory=list)
    output_shapes: list[Shape] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    source_op: str = ""  # the operator type in the source format (ONNX op_type, IR type)


class OpGraph:
    """A DAG of :class:`OpNode` kept in topological order."""

    def __init__(self, nodes: list[OpNode] | None = None, name: str = "") -> None:
        self.name = name
        self.nodes: dict[str, OpNode] = {}
        for n in nodes or []:
            self.nodes[n.name] = n
        self._check_links()
        self.toposort()

    @classmethod
    def _from_linked(cls, nodes: dict[str, OpNode], name: str = "") -> "OpGraph":
        """The graph of ``nodes`` (``{name: node}``, kept as the graph's dict) from a front end
        that links them consistently by construction (every name in a node's ``inputs`` and
        ``outputs`` is a key of ``nodes``), so the constructor's link check is skipped; the
        order is checked (and sorted where needed) as the constructor does."""
        graph = cls.__new__(cls)
        graph.name = name
        graph.nodes = nodes
        graph.toposort()
        return graph

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[OpNode]:
        return iter(self.nodes.values())

    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    def __getitem__(self, name: str) -> OpNode:
        return self.nodes[name]

    def _check_links(self) -> None:
        for n in self.nodes.values():
            for other in n.inputs + n.outputs:
                if other not in self.nodes:
                    raise ModelFormatError(f"graph node {n.name!r} refers to unknown node "
                                           f"{other!r}")

    def toposort(self) -> None:
        """Reorder ``nodes`` topologically (stable: keeps the given order where it can)."""
        order = list(self.nodes)
        pos = {k: i for i, k in enumerate(order)}
        if all(pos[o] > i for i, n in enumerate(self.nodes.values()) for o in n.outputs):
            return  # already topological: the stable sort below would keep this order
        indeg = {k: 0 for k in order}
        for n in self.nodes.values():
            for o in set(n.outputs):
                indeg[o] += 1
        import heapq

        heap = [pos[k] for k in order if indeg[k] == 0]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            k = order[heapq.heappop(heap)]
            out.append(k)
            for o in dict.fromkeys(self.nodes[k].outputs):
                indeg[o] -= 1
                if indeg[o] == 0:
                    heapq.heappush(heap, pos[o])
        if len(out) != len(order):
            stuck = [k for k in order if k not in set(out)][:5]
            raise ModelFormatError(f"graph has a cycle (involving {stuck})")
        self.nodes = {k: self.nodes[k] for k in out}

    def remove_node(self, name: str, *, reconnect: bool = True) -> None:
        """Remove a node; with ``reconnect`` its producers feed its consumers directly."""
        node = self.nodes.pop(name)
        for p in node.inputs:
            pn = self.nodes[p]
            pn.outputs = [o for o in pn.outputs if o != name]
            if reconnect:
                for c in node.outputs:
                    if c not in pn.outputs:
                        pn.outputs.append(c)
        for c in node.outputs:
            cn = self.nodes[c]
            new_inputs: list[str] = []
            for i in cn.inputs:
                if i == name:
                    if reconnect:
                        new_inputs.extend(p for p in node.inputs if p not in new_inputs)
                elif i not in new_inputs:
                    new_inputs.append(i)
            cn.inputs = new_inputs

    # ----------------------------------------------------------------- nn-Meter IR
    def to_nnmeter_ir(self) -> dict:
        """The graph as an nn-Meter IR dict (``{name: {attr: {...}, inbounds, outbounds}}``)."""
        out = {}
        for n in self.nodes.values():
            attrs = {k: v for k, v in n.attrs.items()}
            out[n.name] = {
                "attr": {"name": n.name, "type": n.type, "attr": attrs,
                         "input_shape": [list(s) for s in n.input_shapes],
                         "output_shape": [list(s) for s in n.output_shapes]},
                "inbounds": list(n.inputs),
                "outbounds": list(n.outputs),
            }
        return out

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_nnmeter_ir(), indent=1))

    def summary(self) -> str:
        lines = [f"OpGraph {self.name!r}: {len(self)} nodes"]
        for n in self.nodes.values():
            lines.append(f"  {n.name}: {n.type} in={n.input_shapes} out={n.output_shapes}")
        return "\n".join(lines)
