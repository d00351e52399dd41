"""Fold shape arithmetic into constants so that ONNX shape inference sees static shapes.

Exported graphs compute slice bounds, reshape targets and split sizes with small subgraphs
(``Shape -> Gather -> Div -> Unsqueeze -> Concat``...). Once the input shape is fixed these are
constants; this module evaluates them with small numpy implementations (falling back to ONNX's
reference evaluator for rare ops) and turns their results into initializers, alternating with
shape inference until nothing more folds.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

_MAX_FOLD_ELEMS = 4096  # larger constant computations are left alone (weights are pre-folded)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _slice(node, x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(sl)]


def _unsqueeze(node, x, axes=None):
    axes = _attr(node, "axes") if axes is None else axes
    out = x
    rank = x.ndim + len(axes)
    for a in sorted(int(a) % rank for a in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze(node, x, axes=None):
    axes = _attr(node, "axes") if axes is None else axes
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) % x.ndim for a in axes))


_NUMPY_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda n, x: x,
    "Gather": lambda n, x, i: np.take(x, i, axis=_attr(n, "axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, *xs: np.concatenate([np.atleast_1d(x) for x in xs],
                                            axis=_attr(n, "axis", 0)),
    "Slice": _slice,
    "Cast": lambda n, x: x.astype(__import__("onnx").helper.tensor_dtype_to_np_dtype(
        _attr(n, "to"))),
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: (a // b) if np.issubdtype(np.asarray(a).dtype, np.integer) else a / b,
    "Floor": lambda n, x: np.floor(x),
    "Ceil": lambda n, x: np.ceil(x),
    "Neg": lambda n, x: -x,
    "Reshape": lambda n, x, s: x.reshape([int(d) if d != 0 else x.shape[i]
                                          for i, d in enumerate(s)]),
    "Range": lambda n, a, b, c: np.arange(a, b, c),
    "Equal": lambda n, a, b: a == b,
    "Where": lambda n, c, a, b: np.where(c, a, b),
    "Min": lambda n, *xs: np.minimum.reduce(xs),
    "Max": lambda n, *xs: np.maximum.reduce(xs),
    "ReduceProd": lambda n, x, *a: np.prod(x, keepdims=bool(_attr(n, "keepdims", 1))),
}


def _evaluate(node: Any, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    fn = _NUMPY_OPS.get(node.op_type)
    try:
        if fn is not None:
            return [np.asarray(fn(node, *inputs))]
        from onnx.reference import ReferenceEvaluator

        names = [i for i in node.input]
        feeds = {k: v for k, v in zip(names, inputs) if k}
        return [np.asarray(v) for v in ReferenceEvaluator(node).run(None, feeds)]
    except Exception:
        return None


class LazyConstants(dict):
    """name -> numpy value; initializers (TensorProto) are converted on first access."""

    def __init__(self, protos: dict[str, Any]) -> None:
        super().__init__()
        self._protos = protos

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._protos

    def __getitem__(self, name: str) -> np.ndarray:
        if not dict.__contains__(self, name):
            from onnx import numpy_helper

            dict.__setitem__(self, name, numpy_helper.to_array(self._protos[name]))
        return dict.__getitem__(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default


def fold_constants(proto: Any, *, max_elems: int = _MAX_FOLD_ELEMS) -> Any:
    """Return a copy of ``proto`` (static input shapes already set) with its shape arithmetic
    folded into initializers and shapes inferred. Computations on constants of more than
    ``max_elems`` elements are left in place (they do not decide any shape)."""
    import onnx
    from onnx import numpy_helper

    for _ in range(8):
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        g = proto.graph
        shapes: dict[str, list[int]] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            dims = [d.dim_value if d.HasField("dim_value") else -1
                    for d in vi.type.tensor_type.shape.dim]
            if vi.type.tensor_type.HasField("shape") and all(d > 0 for d in dims):
                shapes[vi.name] = dims
        values = LazyConstants({t.name: t for t in g.initializer
                                if math.prod(t.dims) <= max_elems})
        folded: list[int] = []
        new_inits: list[Any] = []
        # Constant nodes feed the folding, so turn them into values first.
        for idx, node in enumerate(g.node):
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        arr = numpy_helper.to_array(a.t)
                        if arr.size <= max_elems and node.output[0] not in values:
                            values[node.output[0]] = arr
                            new_inits.append(numpy_helper.from_array(arr, node.output[0]))
                            folded.append(idx)
        for idx, node in enumerate(g.node):
            ins = list(node.input)
            if node.op_type == "Constant":
                continue
            if node.op_type == "Shape":
                if ins[0] in shapes:
                    shp = np.asarray(shapes[ins[0]], dtype=np.int64)
                    start, end = _attr(node, "start"), _attr(node, "end")
                    if start is not None or end is not None:
                        shp = shp[slice(start, end)]
                    values[node.output[0]] = shp
                    folded.append(idx)
                    new_inits.append(numpy_helper.from_array(shp, node.output[0]))
                continue
            present = [i for i in ins if i]
            if not present or not all(i in values for i in present):
                continue
            if node.op_type in ("RandomNormal", "RandomUniform", "RandomNormalLike",
                                "RandomUniformLike", "Dropout"):
                continue
            if sum(values[i].size for i in present) > max_elems:
                continue
            outs = _evaluate(node, [values[i] if i else None for i in ins])
            if outs is None or len(outs) != len([o for o in node.output if o]):
                continue
            for name, val in zip([o for o in node.output if o], outs):
                values[name] = val
                new_inits.append(numpy_helper.from_array(np.asarray(val), name))
            folded.append(idx)
        if not folded:
            return proto
        drop = set(folded)
        keep = [n for i, n in enumerate(g.node) if i not in drop]
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(new_inits)
        # Drop stale inferred shapes of tensors that became initializers.
        init_names = {t.name for t in g.initializer}
        vis = [v for v in g.value_info if v.name not in init_names]
        del g.value_info[:]
        g.value_info.extend(vis)
    return onnx.shape_inference.infer_shapes(proto, data_prop=True)
