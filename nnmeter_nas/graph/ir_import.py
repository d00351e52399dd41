"""nn-Meter IR (dict or JSON file) -> :class:`OpGraph`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError
from .ir import OpGraph, OpNode
from .op_types import IR_DUMMY_TYPES, canonical_ir_type


def read_ir(source: dict | str | Path) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "<nn-Meter IR dict>"
    path = Path(source)
    if not path.is_file():
        raise ModelFormatError(f"model file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a valid nn-Meter IR JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: an nn-Meter IR file holds a JSON object "
                               f"{{node_name: {{attr, inbounds, outbounds}}}}")
    return data, str(path)


def ir_to_graph(source: dict | str | Path) -> OpGraph:
    """Convert an nn-Meter IR graph. Node types may be canonical (``conv``), ONNX (``Conv``)
    or TensorFlow (``Conv2D``) names; 4-D shapes must already be NHWC, as nn-Meter writes them."""
    ir, label = read_ir(source)
    nodes: dict[str, OpNode] = {}
    dummies: list[str] = []
    for name, entry in ir.items():
        if not isinstance(entry, dict) or "attr" not in entry:
            raise ModelFormatError(f"{label}: IR node {name!r} has no 'attr' entry")
        attr = entry["attr"]
        raw_type = attr.get("type")
        if not raw_type:
            raise ModelFormatError(f"{label}: IR node {name!r} has no type")
        op_attrs: dict[str, Any] = dict(attr.get("attr") or {})
        for key in ("kernel_shape", "ksize"):
            if key in op_attrs:
                op_attrs["ks"] = list(op_attrs.pop(key))
        if op_attrs.get("weight_shape"):
            op_attrs["ks"] = list(op_attrs.pop("weight_shape"))[0:2]
        ctype = canonical_ir_type(raw_type)
        in_shapes = [list(s) for s in attr.get("input_shape") or []]
        out_shapes = [list(s) for s in attr.get("output_shape") or []]
        if raw_type in IR_DUMMY_TYPES:
            dummies.append(name)
        elif not in_shapes or not out_shapes:
            raise ModelFormatError(f"{label}: IR node {name!r} ({raw_type}) has no "
                                   "input_shape/output_shape; shapes are needed for prediction")
        if ctype == "split" and "axis" in op_attrs:
            op_attrs["split_dim"] = op_attrs.pop("axis")
        if ctype == "conv" and int(op_attrs.get("group", 1)) > 1 and in_shapes and \
                len(in_shapes[0]) == 4 and int(op_attrs["group"]) == in_shapes[0][3]:
            ctype = "dwconv"
        if ctype in ("add", "mul", "div", "sub") and in_shapes:
            first = next((s for s in in_shapes if s), in_shapes[0])
            in_shapes = [first] * len(in_shapes)
        nodes[name] = OpNode(name=name, type=ctype,
                             inputs=list(dict.fromkeys(entry.get("inbounds") or [])),
                             outputs=list(dict.fromkeys(entry.get("outbounds") or [])),
                             input_shapes=in_shapes, output_shapes=out_shapes,
                             attrs=op_attrs, source_op=raw_type)
    # Links may be given one way only; make them symmetric and drop references to unknowns.
    for n in nodes.values():
        n.inputs = [i for i in n.inputs if i in nodes]
        n.outputs = [o for o in n.outputs if o in nodes]
    for n in nodes.values():
        for i in n.inputs:
            if n.name not in nodes[i].outputs:
                nodes[i].outputs.append(n.name)
        for o in n.outputs:
            if n.name not in nodes[o].inputs:
                nodes[o].inputs.append(n.name)
    graph = OpGraph(list(nodes.values()), name=label)
    for d in dummies:
        graph.remove_node(d, reconnect=False)
    return graph
