"""ONNX -> :class:`OpGraph` with static shapes.

Steps: read the model (clear errors for missing, truncated or non-ONNX files), fix the input
shapes (``input_shape`` or the model's own static ones), run ONNX shape inference, drop
everything computed from constants only (weights, shape arithmetic: ``Constant``, ``Shape`` of
static tensors...), bypass ``Identity``/``Dropout``, fold a ``BatchNormalization`` that directly
follows a convolution into it (torch's eval-mode export does the same, so both kinds of file
give the same kernels), and map op types to nn-Meter's canonical names.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DynamicShapeError, ModelFormatError, UnsupportedOpError
from .ir import OpGraph, OpNode
from .op_types import ONNX_OP_TYPES, ONNX_PASSTHROUGH

InputShape = Sequence[int] | dict[str, Sequence[int]] | None
_SMALL_CONST = 4096


def read_onnx(model: Any) -> tuple[Any, str]:
    """Return ``(ModelProto, label)`` for a path, bytes or ``ModelProto``."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<onnx.ModelProto>"
    if isinstance(model, (bytes, bytearray)):
        data, label = bytes(model), "<onnx bytes>"
    elif isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelFormatError(f"{path} is a directory, not a model file" if path.is_dir()
                                   else f"model file not found: {path}")
        from .onnx_skim import skim_onnx_file

        proto = skim_onnx_file(path)
        if len(proto.graph.node) == 0:
            raise ModelFormatError(f"{path}: not a valid ONNX model (the graph has no nodes; "
                                   "is this really an ONNX file?)")
        return proto, str(path)
    else:
        raise ModelFormatError(f"cannot read an ONNX model from a {type(model).__name__}")
    if not data:
        raise ModelFormatError(f"{label}: empty file, not an ONNX model")
    try:
        proto = onnx.load_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelFormatError(f"{label}: not a valid ONNX model (corrupt or truncated file?): "
                               f"{exc}") from exc
    if len(proto.graph.node) == 0:
        raise ModelFormatError(f"{label}: not a valid ONNX model (the graph has no nodes; is "
                               "this really an ONNX file?)")
    return proto, label


def _dims(type_proto: Any) -> list[int] | None:
    """Static dims of a tensor type, or None if any is unknown."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            return None
    return dims


def _to_nhwc(shape: list[int]) -> list[int]:
    if len(shape) == 4:
        return [shape[0], shape[2], shape[3], shape[1]]
    return list(shape)


def _set_input_shapes(proto: Any, input_shape: InputShape, label: str,
                      weights: set[str]) -> list[str]:
    """Fix the inputs' shapes; returns a note for each static shape ``input_shape`` replaced."""
    import onnx

    init_names = {t.name for t in proto.graph.initializer} | weights
    inputs = [i for i in proto.graph.input if i.name not in init_names]
    replaced: list[str] = []
    if input_shape is not None:
        if isinstance(input_shape, dict):
            wanted = {k: list(v) for k, v in input_shape.items()}
            unknown = set(wanted) - {i.name for i in inputs}
            if unknown:
                raise ModelFormatError(f"{label}: input_shape names unknown inputs {sorted(unknown)}; "
                                       f"the model's inputs are {[i.name for i in inputs]}")
        else:
            if len(inputs) != 1:
                raise ModelFormatError(f"{label}: the model has {len(inputs)} inputs "
                                       f"{[i.name for i in inputs]}; pass input_shape as a dict "
                                       "{input_name: shape}")
            wanted = {inputs[0].name: list(input_shape)}
        for inp in inputs:
            if inp.name not in wanted:
                continue
            shape = wanted[inp.name]
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
                raise ModelFormatError(f"{label}: input_shape for {inp.name!r} must be positive "
                                       f"ints, got {shape}")
            old = inp.type.tensor_type.shape.dim
            if len(old) and len(old) != len(shape):
                raise ModelFormatError(f"{label}: input {inp.name!r} has rank {len(old)}, "
                                       f"input_shape {shape} has rank {len(shape)}")
            static = _dims(inp.type)
            if static is not None and static != [int(d) for d in shape]:
                replaced.append(f"input_shape {tuple(int(d) for d in shape)} replaced the "
                                f"static shape {tuple(static)} of the model's input "
                                f"{inp.name!r}")
            elem = inp.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
            inp.type.CopyFrom(onnx.helper.make_tensor_type_proto(elem, [int(d) for d in shape]))
    for inp in inputs:
        if _dims(inp.type) is None:
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                    for d in inp.type.tensor_type.shape.dim]
            raise DynamicShapeError(f"{label}: input {inp.name!r} has dynamic or unknown shape "
                                    f"{dims}; pass input_shape=(N, C, H, W) (on the command "
                                    "line: --input-shape N,C,H,W) to fix it")
    return replaced


def _skeleton(proto: Any) -> tuple[Any, set[str]]:
    """A copy of ``proto`` whose large initializers (weights) are declared as typed graph
    inputs without data, and their names. Shape inference needs only their shapes, and not
    copying their bytes makes import several times faster; they stay constants."""
    import onnx

    g = proto.graph
    out = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "domain", "model_version"):
        setattr(out, f, getattr(proto, f))
    out.opset_import.extend(proto.opset_import)
    out.functions.extend(proto.functions)
    og = out.graph
    og.name = g.name
    og.node.extend(g.node)
    init_names = {t.name for t in g.initializer}
    og.input.extend(i for i in g.input if i.name not in init_names)
    og.output.extend(g.output)
    og.value_info.extend(g.value_info)
    weights: set[str] = set()
    for t in g.initializer:
        if math.prod(t.dims) <= _SMALL_CONST:
            og.initializer.append(t)
        else:
            og.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                               list(t.dims)))
            weights.add(t.name)
    return out, weights


# Memos of what is read from small protobuf messages, keyed by their serialized bytes (a
# network repeats a few attribute values and tensor types many times, and serializing one is
# several times cheaper than reading its fields); cleared when they reach _MEMO_SIZE entries.
_MEMO_SIZE = 4096
_MEMO_KEY_BYTES = 256  # larger messages are read directly
_ATTR_MEMO: dict[bytes, tuple] = {}
_DIMS_MEMO: dict[bytes, list[int] | None] = {}


def _attributes(node: Any) -> dict[str, Any]:
    """``node``'s attributes as Python values: what ``onnx.helper.get_attribute_value`` gives,
    strings decoded, lists as lists, tensors and graphs left out (ints, floats and their lists,
    the common case, are read directly, without the helper). Each distinct attribute is
    read once per process (:data:`_ATTR_MEMO`); its lists are copied for each node."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        key = a.SerializeToString()
        hit = _ATTR_MEMO.get(key)
        if hit is None:
            hit = _attribute(a)
            if len(key) <= _MEMO_KEY_BYTES:
                if len(_ATTR_MEMO) >= _MEMO_SIZE:
                    _ATTR_MEMO.clear()
                _ATTR_MEMO[key] = hit
        if hit:
            name, v = hit
            out[name] = list(v) if type(v) is list else v
    return out


def _attribute(a: Any) -> tuple:
    """``(name, value)`` of one attribute as :func:`_attributes` gives it, () if left out."""
    import onnx

    t = a.type  # AttributeProto.AttributeType
    if t == 7 and not a.ref_attr_name:  # INTS
        v = list(a.ints)
    elif t == 2 and not a.ref_attr_name:  # INT
        v = a.i
    elif t == 1 and not a.ref_attr_name:  # FLOAT
        v = a.f
    elif t == 6 and not a.ref_attr_name:  # FLOATS
        v = list(a.floats)
    elif t == 3 and not a.ref_attr_name:  # STRING
        v = a.s
    else:
        v = onnx.helper.get_attribute_value(a)
        if hasattr(v, "ByteSize"):
            return ()
        if isinstance(v, (list, tuple)):
            v = list(v)
    return a.name, v.decode() if isinstance(v, bytes) else v


def _static_dims(type_proto: Any) -> list[int] | None:
    """The dims of a tensor type when all are known and positive, else None (memoised by
    the type's bytes, :data:`_DIMS_MEMO`; the caller copies the list)."""
    key = type_proto.SerializeToString()
    try:
        return _DIMS_MEMO[key]
    except KeyError:
        pass
    tt = type_proto.tensor_type
    dims: list[int] | None = None
    if tt.HasField("shape"):
        dims = [d.dim_value for d in tt.shape.dim]
        if not all(d > 0 for d in dims):
            dims = None
    if len(key) <= _MEMO_KEY_BYTES:
        if len(_DIMS_MEMO) >= _MEMO_SIZE:
            _DIMS_MEMO.clear()
        _DIMS_MEMO[key] = dims
    return dims


def _node_rows(graph: Any) -> list[tuple[Any, str, tuple[str, ...], tuple[str, ...]]]:
    """``(node, op_type, inputs, outputs)`` of each node of an ONNX graph, read once (each
    protobuf field access builds a new Python object)."""
    return [(n, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node]


def _shaped_already(proto: Any, input_shape: InputShape, rows: list
                    ) -> dict[str, list[int] | None] | None:
    """Static shapes of every tensor of ``proto`` (graph inputs, value_info, outputs) when
    shape inference and constant folding have nothing to add, else None.

    That is the case when the inputs are static and ``input_shape`` is None or equal to them,
    every node output has a static shape, and no node computes on constants only (no
    ``Constant`` or ``Shape`` node, no node whose inputs are all initializers): a file written
    by :func:`~nnmeter_nas.graph.constant_folding.fold_constants`, or any fully shaped and
    simplified model. ONNX shape inference keeps the shapes a model declares, so its result
    would be these shapes.
    """
    g = proto.graph
    init_names = {t.name for t in g.initializer}
    shapes: dict[str, list[int] | None] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        dims = _static_dims(vi.type)
        if dims is None:
            return None
        shapes[vi.name] = list(dims)
    inputs = [i.name for i in g.input if i.name not in init_names]
    if input_shape is not None:
        wanted = dict(input_shape) if isinstance(input_shape, dict) else \
            ({inputs[0]: input_shape} if len(inputs) == 1 else None)
        if not wanted or any(k not in inputs for k in wanted):
            return None
        for k, v in wanted.items():
            if not all(isinstance(d, (int, np.integer)) for d in v) or \
                    [int(d) for d in v] != shapes[k]:
                return None
    for _, op, ins, outs in rows:
        if op == "Constant" or op == "Shape":
            return None
        if all(i in init_names for i in ins if i):
            return None
        for o in outs:
            if o and o not in shapes:
                return None
    return shapes


def _constant_value(name: str, consts: dict[str, np.ndarray]) -> np.ndarray | None:
    return consts.get(name)


def onnx_to_graph(model: Any, *, input_shape: InputShape = None, fold_bn: bool = True) -> OpGraph:
    """Convert an ONNX model (path, bytes or ``ModelProto``) to a shaped :class:`OpGraph`."""
    import onnx
    from onnx import numpy_helper

    from .constant_folding import LazyConstants, fold_constants

    proto, label = read_onnx(model)
    rows = _node_rows(proto.graph)
    shapes = _shaped_already(proto, input_shape, rows)
    if shapes is not None:
        # Every tensor already has a static shape and nothing folds: shape inference and
        # folding would return this graph as it is (see _shaped_already), so skip both.
        g = proto.graph
        _set_input_shapes(proto, None, label, set())  # (cannot fail: inputs are static)
        replaced: list[str] = []
        weights: set[str] = set()  # (every initializer is a constant below)
        small_elems = _SMALL_CONST  # the skeleton's rule: larger ones are weights
    else:
        proto, weights = _skeleton(proto)
        replaced = _set_input_shapes(proto, input_shape, label, weights)
        if input_shape is not None:
            # Shapes the file declares for inner tensors and outputs hold for its own input
            # shape; ONNX shape inference keeps declared shapes, so a requested input shape
            # would otherwise leave every later tensor at the file's size.
            del proto.graph.value_info[:]
            for out in proto.graph.output:
                out.type.tensor_type.ClearField("shape")
        try:
            proto = fold_constants(proto)
        except Exception as exc:  # onnx raises several exception types here
            raise ModelFormatError(f"{label}: ONNX shape inference failed: {exc}") from exc
        g = proto.graph
        rows = _node_rows(g)
        shapes = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            shapes[vi.name] = _dims(vi.type)
        small_elems = math.inf  # (the skeleton kept only small initializers)
    small: dict[str, Any] = {}
    const_names = set(weights)
    for t in g.initializer:
        name, dims = t.name, list(t.dims)
        shapes[name] = dims
        const_names.add(name)
        if math.prod(dims) <= small_elems:
            small[name] = t
    consts = LazyConstants(small)  # axes, split sizes
    alias: dict[str, str] = {}  # tensor -> tensor it equals (Identity/Dropout bypass)
    producer: dict[str, str] = {}
    kept: list[tuple[Any, str]] = []
    used_names: set[str] = set()

    def real(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    for idx, (node, op, raw_ins, outs) in enumerate(rows):
        ins = [real(i) for i in raw_ins if i]
        if op == "Constant":
            for o in outs:
                const_names.add(o)
                for a in node.attribute:
                    if a.name == "value":
                        arr = numpy_helper.to_array(a.t)
                        if arr.size <= 64:
                            consts[o] = arr
            continue
        if op == "Shape" and ins and shapes.get(ins[0]) is not None:
            const_names.update(outs)
            consts[outs[0]] = np.asarray(shapes[ins[0]], dtype=np.int64)
            continue
        if all(i in const_names for i in ins):
            # Computed from constants only: folded away (shape arithmetic, weight transforms).
            const_names.update(o for o in outs if o)
            continue
        if op in ONNX_PASSTHROUGH:
            alias[outs[0]] = ins[0]
            continue
        if op not in ONNX_OP_TYPES:
            raise UnsupportedOpError(
                f"{label}: operator {op!r} (node {node.name or f'#{idx}'!r}) is not "
                "supported by the latency engine, so no predictor can price it; replace it "
                "with supported operators or predict the network without it. Supported "
                f"operators: {', '.join(sorted(ONNX_OP_TYPES))}", op=op, node=node.name or "")
        name = node.name or f"{op}_{idx}"
        while name in used_names:
            name = f"{name}_{idx}"
        used_names.add(name)
        for o in outs:
            if o:
                producer[o] = name
        kept.append((node, name, op, raw_ins, outs))

    nodes: dict[str, OpNode] = {}
    data_inputs: dict[str, list[str]] = {}  # node -> its non-constant input tensors
    slice_groups: dict[str, str] = {}  # tensor -> name of the split node that slices it
    for node, name, op, raw_ins, node_outs in kept:
        ins = [real(i) for i in raw_ins if i]
        data_ins = [i for i in ins if i not in const_names]
        in_shapes = []
        for t in data_ins:
            s = shapes.get(t)
            if s is None:
                raise DynamicShapeError(f"{label}: tensor {t!r} (input of node {name!r}, "
                                        f"{op}) has an unknown shape; pass a static "
                                        "input_shape or simplify the model")
            in_shapes.append(s)
        out_shapes = []
        outputs = node_outs[:1] if op in ("BatchNormalization", "Dropout") else node_outs
        for o in outputs:
            if not o:
                continue
            s = shapes.get(o)
            if s is None:
                raise DynamicShapeError(f"{label}: output {o!r} of node {name!r} "
                                        f"({op}) has an unknown shape; pass a static "
                                        "input_shape or simplify the model")
            out_shapes.append(s)
        attrs = _attributes(node)
        ctype = ONNX_OP_TYPES[op]
        if op == "Conv":
            if "kernel_shape" not in attrs and len(ins) > 1 and shapes.get(ins[1]):
                attrs["kernel_shape"] = shapes[ins[1]][2:]
            group = int(attrs.get("group", 1))
            if group > 1 and group == in_shapes[0][1]:
                ctype = "dwconv"
            weight = shapes.get(ins[1]) if len(ins) > 1 else None
            if weight and len(weight) >= 2:  # (C_out, C_in / group, kH, kW)
                attrs["in_channels"] = int(weight[1]) * group
        elif op == "Gemm" and not attrs.get("transA") and len(ins) > 1 and \
                len(shapes.get(ins[1]) or []) == 2:
            weight = shapes[ins[1]]
            attrs["in_features"] = int(weight[1] if attrs.get("transB") else weight[0])
        elif op == "MatMul" and len(ins) == 2 and ins[1] in const_names and \
                len(shapes.get(ins[1]) or []) == 2:
            ctype = "fc"
            attrs["in_features"] = int(shapes[ins[1]][0])
        elif op == "ReduceMean":
            axes = attrs.get("axes")
            if axes is None and len(ins) > 1:
                v = _constant_value(ins[1], consts)
                axes = None if v is None else [int(a) for a in np.ravel(v)]
            rank = len(in_shapes[0])
            if axes is not None and rank == 4 and sorted(a % 4 for a in axes) == [2, 3]:
                ctype = "gap"
        elif op == "Split" and "split" not in attrs and len(ins) > 1:
            v = _constant_value(ins[1], consts)
            if v is not None:
                attrs["split"] = [int(a) for a in np.ravel(v)]
        elif op == "Slice":
            src = data_ins[0] if data_ins else ins[0]
            if src in slice_groups:  # nn-Meter merges the slices of one tensor into one split
                merged = nodes[slice_groups[src]]
                merged.output_shapes.extend(_to_nhwc(s) for s in out_shapes)
                for o in node_outs:
                    producer[o] = merged.name
                continue
            slice_groups[src] = name
        if "kernel_shape" in attrs:
            attrs["ks"] = list(attrs.pop("kernel_shape"))
        if op in ("MaxPool", "AveragePool", "Conv", "ConvTranspose"):
            nd = len(attrs.get("ks", [1, 1]))
            attrs.setdefault("strides", [1] * nd)
            attrs.setdefault("pads", [0] * (2 * nd))
        if ctype == "split" and "axis" in attrs:
            attrs["split_dim"] = attrs.pop("axis")
        nodes[name] = OpNode(name=name, type=ctype,  # inputs: below, once slices merged
                             input_shapes=[_to_nhwc(s) for s in in_shapes],
                             output_shapes=[_to_nhwc(s) for s in out_shapes],
                             attrs=attrs, source_op=op)
        data_inputs[name] = data_ins
    # Inputs were resolved through `producer`, which merged slices may have redirected.
    for n in nodes.values():
        n.inputs = list(dict.fromkeys(producer[t] for t in data_inputs[n.name]
                                      if t in producer))
    for n in nodes.values():
        for p in n.inputs:
            if n.name not in nodes[p].outputs:
                nodes[p].outputs.append(n.name)
    graph = OpGraph(list(nodes.values()), name=label)
    if fold_bn:
        fold_batchnorm(graph)
    fuse_layer_norm(graph)
    if replaced:
        # The graph layer checks every front end's graph (load_graph); here the error can
        # also say which requested shape made the graph disagree with its weights.
        from ..errors import GraphValidationError
        from .validate import validate_graph

        try:
            validate_graph(graph)
        except GraphValidationError as exc:
            raise GraphValidationError(f"{exc}: {'; '.join(replaced)}. Leave input_shape out "
                                       "or give one the model's weights accept") from None
    return graph


def fold_batchnorm(graph: OpGraph) -> None:
    """Fold each ``bn`` whose only producer is a conv it alone consumes into that conv."""
    for name in list(graph.nodes):
        node = graph.nodes.get(name)
        if node is None or node.type != "bn" or len(node.inputs) != 1:
            continue
        prod = graph.nodes[node.inputs[0]]
        if prod.type in ("conv", "dwconv", "fc") and prod.outputs == [name]:
            prod.attrs["folded_bn"] = True
            graph.remove_node(name)


_MEAN_TYPES = ("reducemean", "gap")  # (a mean over H and W of an NCHW tensor reads as gap)


def fuse_layer_norm(graph: OpGraph) -> None:
    """Collapse each layer normalisation written out as opset 13 writes it (``ReduceMean``,
    ``Sub``, ``Pow``, ``ReduceMean``, ``Add`` eps, ``Sqrt``, ``Div``, then the affine ``Mul``
    and ``Add`` where they take no other activation) into one ``layernorm`` node, as an
    opset-17 ``LayerNormalization`` reads: a torch module, its opset-13 export and its
    opset-17 export then give the same kernels. The first ``ReduceMean`` becomes the fused
    node (its name, which holds the module path in an export, is kept)."""
    nodes = graph.nodes

    def only(node: OpNode, types: tuple[str, ...]) -> OpNode | None:
        """The one consumer of ``node`` when it reads ``node`` alone and has a type in
        ``types``."""
        if len(node.outputs) != 1:
            return None
        c = nodes[node.outputs[0]]
        return c if c.type in types and c.inputs == [node.name] else None

    for name in list(nodes):
        mean = nodes.get(name)
        if mean is None or mean.type not in _MEAN_TYPES or len(mean.inputs) > 1 or \
                len(mean.outputs) != 1 or len(mean.input_shapes) != 1:
            continue
        sub = nodes[mean.outputs[0]]
        if sub.type != "sub" or set(sub.inputs) != set(mean.inputs) | {name} or \
                len(sub.outputs) != 2 or sub.output_shapes != mean.input_shapes:
            continue
        pow_, div = sorted((nodes[o] for o in sub.outputs), key=lambda n: n.type != "pow")
        if pow_.type != "pow" or pow_.inputs != [sub.name] or div.type != "div":
            continue
        var = only(pow_, _MEAN_TYPES)
        eps = var and only(var, ("add",))
        std = eps and only(eps, ("sqrt",))
        if std is None or std.outputs != [div.name] or \
                sorted(div.inputs) != sorted([sub.name, std.name]):
            continue
        chain, last = [sub, pow_, var, eps, std, div], div
        for t in ("mul", "add"):  # the affine weight and bias (constants)
            nxt = only(last, (t,))
            if nxt is not None and nxt.output_shapes == last.output_shapes:
                chain.append(nxt)
                last = nxt
        for p in mean.inputs:
            prod = nodes[p]
            prod.outputs = [o for o in prod.outputs if o != sub.name]
        for c in last.outputs:
            cn = nodes[c]
            cn.inputs = list(dict.fromkeys(name if i == last.name else i for i in cn.inputs))
        axes = mean.attrs.get("axes")
        rank = len(mean.input_shapes[0])
        mean.type, mean.source_op = "layernorm", "LayerNormalization"
        mean.attrs = {"axis": min(int(a) % rank for a in axes) - rank if axes else -1}
        mean.outputs = list(last.outputs)
        mean.output_shapes = [list(s) for s in last.output_shapes]
        for n in chain:
            del nodes[n.name]
