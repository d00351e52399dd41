"""nn-Meter IR (dict or JSON file) -> :class:`OpGraph`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import GraphValidationError, ModelFormatError
from .ir import OpGraph, OpNode
from .op_types import IR_DUMMY_TYPES, canonical_ir_type


def read_ir(source: dict | str | Path) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "<nn-Meter IR dict>"
    path = Path(source)
    if not path.is_file():
        raise ModelFormatError(f"{path} is a directory, not a model file" if path.is_dir()
                               else f"model file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a valid nn-Meter IR JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: an nn-Meter IR file holds a JSON object "
                               f"{{node_name: {{attr, inbounds, outbounds}}}}")
    return data, str(path)


def _where(label: str, name: str, raw_type: Any) -> str:
    return f"{label}: IR node {name!r} ({raw_type})"


def _int_list(value: Any, key: str, where: str) -> list:
    """``value`` of the size attribute ``key`` as a list (an int stands for all its dims)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    raise GraphValidationError(f"{where}: attribute {key!r} is {value!r}; it must be a list of "
                               "positive ints such as [3, 3]: fix the IR")


def _shape_list(value: Any, key: str, where: str) -> list[list]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or \
            not all(isinstance(s, (list, tuple)) for s in value):
        raise GraphValidationError(f"{where}: {key} is {value!r}; it must be a list of shapes, "
                                   "each a list of ints such as [[1, 56, 56, 24]]: fix the IR")
    return [list(s) for s in value]


def _links(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key) or []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise GraphValidationError(f"{where}: {key!r} is {value!r}; it must be a list of node "
                                   "names: fix the IR")
    return list(dict.fromkeys(value))


def ir_to_graph(source: dict | str | Path) -> OpGraph:
    """Convert an nn-Meter IR graph. Node types may be canonical (``conv``), ONNX (``Conv``)
    or TensorFlow (``Conv2D``) names; 4-D shapes must already be NHWC, as nn-Meter writes them.

    Links (``inbounds``/``outbounds``) may be given one way only; a link to a node that is not
    in the IR is refused, as are malformed shapes and size attributes (the graph layer's
    :func:`~nnmeter_nas.graph.validate.validate_graph` checks the rest)."""
    ir, label = read_ir(source)
    if not ir:
        raise ModelFormatError(f"{label}: the IR has no nodes, so there is nothing to predict; "
                               "is this the right file?")
    nodes: dict[str, OpNode] = {}
    dummies: list[str] = []
    for name, entry in ir.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("attr"), dict):
            raise ModelFormatError(f"{label}: IR node {name!r} has no 'attr' entry")
        attr = entry["attr"]
        raw_type = attr.get("type")
        if not raw_type or not isinstance(raw_type, str):
            raise ModelFormatError(f"{label}: IR node {name!r} has no type")
        where = _where(label, name, raw_type)
        raw_attrs = attr.get("attr") or {}
        if not isinstance(raw_attrs, dict):
            raise GraphValidationError(f"{where}: its 'attr' entry is {raw_attrs!r}; it must be "
                                       "an object of operator attributes: fix the IR")
        op_attrs: dict[str, Any] = dict(raw_attrs)
        for key in ("kernel_shape", "ksize"):
            if key in op_attrs:
                op_attrs["ks"] = _int_list(op_attrs.pop(key), key, where)
        if op_attrs.get("weight_shape"):
            op_attrs["ks"] = _int_list(op_attrs.pop("weight_shape"), "weight_shape", where)[0:2]
        for key in ("strides", "pads", "dilations"):
            if key in op_attrs:
                op_attrs[key] = _int_list(op_attrs[key], key, where)
        group = op_attrs.get("group", 1)
        if isinstance(group, bool) or not isinstance(group, int) or group < 1:
            raise GraphValidationError(f"{where}: attribute 'group' is {group!r}; it must be a "
                                       "positive int: fix the IR")
        ctype = canonical_ir_type(raw_type)
        in_shapes = _shape_list(attr.get("input_shape"), "input_shape", where)
        out_shapes = _shape_list(attr.get("output_shape"), "output_shape", where)
        if raw_type in IR_DUMMY_TYPES:
            dummies.append(name)
        elif not in_shapes or not out_shapes:
            raise ModelFormatError(f"{label}: IR node {name!r} ({raw_type}) has no "
                                   "input_shape/output_shape; shapes are needed for prediction")
        if ctype == "split" and "axis" in op_attrs:
            op_attrs["split_dim"] = op_attrs.pop("axis")
        if ctype == "conv" and group > 1 and in_shapes and \
                len(in_shapes[0]) == 4 and group == in_shapes[0][3]:
            ctype = "dwconv"
        if ctype in ("add", "mul", "div", "sub") and in_shapes:
            first = next((s for s in in_shapes if s), in_shapes[0])
            in_shapes = [first] * len(in_shapes)
        nodes[name] = OpNode(name=name, type=ctype,
                             inputs=_links(entry, "inbounds", where),
                             outputs=_links(entry, "outbounds", where),
                             input_shapes=in_shapes, output_shapes=out_shapes,
                             attrs=op_attrs, source_op=raw_type)
    # Links may be given one way only; make them symmetric. A link to a node that is not in
    # the IR would drop an edge (and the kernel fusion across it) without a word: refuse it.
    for n in nodes.values():
        for other in n.inputs + n.outputs:
            if other not in nodes:
                side = "inbounds" if other in n.inputs else "outbounds"
                raise GraphValidationError(
                    f"{_where(label, n.name, n.source_op)}: its {side} name {other!r}, which is "
                    f"not a node of the IR; add that node or remove the reference "
                    f"({len(nodes)} nodes, e.g. {sorted(nodes)[:5]})")
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
