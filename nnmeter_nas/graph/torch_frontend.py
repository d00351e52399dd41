"""torch.nn.Module -> :class:`OpGraph` without ONNX export: one shape-only forward pass.

The module runs once (eval mode, no gradients) on a "shape tensor", a ``torch.Tensor``
subclass that holds no data: its ``__torch_function__`` intercepts every torch operation the
forward pass calls on it, computes the output shape, and records the ONNX operators the
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 13, what
:mod:`~nnmeter_nas.graph.torch_export` runs) writes for that operation, with the same
attributes. Python control flow runs as in eager mode (``x.size()`` and ``x.shape`` are plain
ints), as it does under the exporter's tracer. The exporter's rewrites that change the
kernels are reproduced:

- common subexpressions are computed once (two identical ops on the same inputs, such as two
  parameter-free pools or the same ReLU applied twice to one tensor);
- in-place ops (``ReLU(inplace=True)``, ``x += y``) update the tensor they modify;
- operations on constants only (parameters, buffers, numbers) are folded away;
- eval-mode BatchNormalization is folded into the convolution before it when that convolution's
  output has no other use (shape queries and graph outputs count as uses); the remaining
  conv/fc -> bn pairs are folded as the ONNX reader does (``folded_bn``);
- consecutive transposes are composed and identity ones dropped; dead code is removed;
- ``Identity``, ``Dropout`` and ``contiguous`` pass their input through; slices of one tensor
  merge into one ``split`` node (as the ONNX reader merges them).

So the graph equals what :func:`~nnmeter_nas.graph.onnx_import.onnx_to_graph` reads from the
exported file: same node types, NHWC shapes, attributes and order, hence the same kernels and
feature vectors. ``tests/test_torch_frontend.py`` checks it on the zoo, SPOS, NAS-Bench-201,
NNI spaces and the examples' networks; docs/torch_frontend.md says what is not covered.

An operation this front end does not map raises :class:`~nnmeter_nas.errors.TorchFrontEndError`
naming the op and the submodule that called it; :func:`nnmeter_nas.graph.load_graph` then falls
back to the ONNX export.
"""
from __future__ import annotations

import math
import operator
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import TorchFrontEndError
from .ir import OpGraph, OpNode
from .onnx_import import fold_batchnorm, fuse_layer_norm
from .op_types import ONNX_OP_TYPES

__all__ = ["torch_to_graph", "traced_shape"]

Shape = tuple


_F32: dict = {}


def _f32(x: float) -> float:
    """``x`` rounded to float32, as ONNX stores float attributes (memoised: a few values,
    batch norms' eps and momentum above all, recur in every network)."""
    try:
        return _F32[x]
    except (KeyError, TypeError):
        pass
    v = float(np.float32(x))
    if type(x) in (float, int) and len(_F32) < 4096:
        _F32[x] = v
    return v


def _pair(v: Any) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(a) for a in v] if len(v) == 2 else [int(v[0])] * 2
    return [int(v), int(v)]


def _ntuple(v: Any, nd: int) -> list[int]:
    """A 1-D or 2-D layer argument (int or sequence) as ``nd`` ints."""
    if type(v) is tuple and len(v) == 2 == nd:  # what a Conv2d holds: a tuple of two ints
        a, b = v
        if type(a) is int and type(b) is int:
            return [a, b]
    return _pair(v) if nd == 2 else [int(v[0]) if isinstance(v, (list, tuple)) else int(v)]


def _nhwc(shape: Sequence[int]) -> list[int]:
    if len(shape) == 4:
        return [int(shape[0]), int(shape[2]), int(shape[3]), int(shape[1])]
    return [int(d) for d in shape]


def _nhwc_ints(shape: tuple) -> list[int]:
    """:func:`_nhwc` of a shape already made of ints."""
    if len(shape) == 4:
        return [shape[0], shape[2], shape[3], shape[1]]
    return list(shape)


class _Unsupported(Exception):
    pass


# Argument checks. A call torch itself refuses (a dimension out of range, shapes that do not
# fit together) must not get a graph: the handlers raise what torch raises (IndexError for a
# dimension, RuntimeError for shapes, with a message saying what is wrong), which the session
# turns into a TorchFrontEndError naming the op and the module. Cheap checks only: a few int
# comparisons per op (the handlers are the hot path of predict_many).

def _dim(dim: Any, rank: int) -> int:
    """``dim`` wrapped into ``[0, rank)`` as torch wraps a dimension argument (a 0-D tensor
    takes dims -1 and 0); IndexError, with torch's message, where it is out of range."""
    n = rank or 1
    if type(dim) is not int:
        dim = operator.index(dim)  # (a numpy int, say, as torch takes it; TypeError else)
    if dim < -n or dim >= n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}],"
                         f" but got {dim})")
    return dim + n if dim < 0 else dim


def _dims(dims: Sequence[Any], rank: int) -> set:
    """The dimensions ``dims`` wrapped as by :func:`_dim`, each at most once (torch refuses a
    repeated dimension in a reduction or a permutation)."""
    out = {_dim(d, rank) for d in dims}
    if len(out) != len(dims):
        raise RuntimeError(f"dim {list(dims)} names a dimension more than once")
    return out


class _Data:
    """An activation: its shape and the graph node producing it (None for a graph input)."""

    __slots__ = ("shape", "src", "piece")

    def __init__(self, shape: Shape, src: str | None, piece: list | None = None) -> None:
        self.shape = tuple(map(int, shape))
        self.src = src
        self.piece = piece  # [used] flag of one slice of a merged split node


_new_data = object.__new__  # (a _Data without __init__: see _Builder.emit's exact)


def _shape_of(v: Any, torch: Any) -> Shape:
    if isinstance(v, _Data):
        return v.shape
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    return ()


def _broadcast(a: Shape, b: Shape) -> Shape:
    """The broadcast shape of ``a`` and ``b`` (numpy's rule, as ``torch.broadcast_shapes``,
    which costs 30x more)."""
    if a == b:
        return a
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(f"shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(out)


def _has_data(v: Any) -> bool:
    if isinstance(v, _Data):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_data(a) for a in v)
    return False


def _conv_out(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


# (stride, padding, dilation, groups, weight shape) -> _conv_spec's result, for the layer
# arguments that are hashable (tuples, ints, strings): what a convolution's node takes from
# them, whatever its input; bounded
_CONV_SPECS: dict = {}
_CONV_ARG_TYPES = (int, str)


def _conv_spec(stride: Any, padding: Any, dilation: Any, groups: Any, wshape: Any) -> tuple:
    """``(nd, same, strides, pads, dilations, kernel, out channels, in_channels, CSE key
    part, error or None)`` of a convolution with these arguments and weight shape (memoised in
    ``_CONV_SPECS`` where the arguments are hashable). The lists are shared: copy them
    before they go into a node."""
    same = padding == "same" if isinstance(padding, str) else False
    if isinstance(padding, str) and not same:
        raise _Unsupported(f"padding={padding!r}")
    nd = len(wshape) - 2  # spatial dims: Conv1d 1, Conv2d 2
    if nd not in (1, 2):
        raise _Unsupported("only 1-D and 2-D convolutions are mapped")
    s, d = _ntuple(stride, nd), _ntuple(dilation, nd)
    p = [0] * nd if same else _ntuple(padding, nd)
    # (raised by the caller after its input rank check, as it was before this memo)
    err = "padding='same' with a stride (torch refuses it)" if same and s != [1] * nd \
        else None
    k = [int(v) for v in wshape[2:]]
    g = int(groups)
    if g < 1 or int(wshape[0]) % g:
        err = f"groups={g} with a weight of size {list(wshape)} (torch refuses it: the " \
            "output channels must divide into the groups)"
    spec = (nd, same, s, p, d, k, int(wshape[0]), int(wshape[1]) * g,
            (tuple(s), tuple(p), tuple(d), g, same), err)
    # memoised for arguments of plain types only (a list is unhashable; an object hashed by
    # its id could be replaced by another at the same id)
    if type(groups) is int and all(type(v) in _CONV_ARG_TYPES or (type(v) is tuple and all(
            type(a) is int for a in v)) for v in (stride, padding, dilation)):
        if len(_CONV_SPECS) >= 4096:
            _CONV_SPECS.clear()
        _CONV_SPECS[stride, padding, dilation, groups, wshape] = spec
    return spec


# ---------------------------------------------------------------------------- graph builder

class _Builder:
    """Accumulates the ONNX-equivalent nodes of one module, with the exporter's CSE."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.nodes: dict[str, OpNode] = {}
        self.counts: dict[str, int] = {}
        self.slice_of: dict[int, tuple[_Data, str]] = {}  # id(source) -> (source, split node)
        self.pieces: dict[str, list[tuple[list, list[int]]]] = {}
        self.shape_queried: set[str] = set()
        self.conv_params: set[str] = set()
        self.bn_params: set[str] = set()
        self.perm_input: dict[str, _Data] = {}
        self.cse: dict[Any, Any] = {}
        self.keep: list[Any] = []  # objects whose ids appear in CSE keys
        self.no_cse = False

    def key(self, v: Any) -> Any:
        if type(v) is _Data or isinstance(v, self.torch.Tensor):
            self.keep.append(v)
            return ("id", id(v))
        if isinstance(v, (list, tuple)):
            return tuple(self.key(a) for a in v)
        if isinstance(v, dict):
            return tuple(sorted((k, self.key(a)) for k, a in v.items()))
        if isinstance(v, slice):
            return ("slice", v.start, v.stop, v.step)
        return (type(v).__name__, v)

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        if self.no_cse:  # in-place ops have side effects: the exporter never merges them
            return fn()
        hit = self.cse.get(key)
        if hit is None:
            hit = self.cse[key] = fn()
        return hit

    def emit(self, op: str, ins: list[_Data], outs: list[Shape], attrs: dict | None = None,
             hint: str = "", owned: bool = False, exact: bool = False) -> list[_Data]:
        """Add one node of ONNX type ``op`` reading activations ``ins`` and producing tensors
        of shapes ``outs`` (``owned``: ``attrs`` is a dict made for this node, kept as it is,
        else it is copied; ``exact``: the shapes are tuples of ints already, as those
        computed from activations' shapes with int arithmetic are, kept without the
        conversion a new :class:`_Data` makes)."""
        if not owned:
            attrs = dict(attrs) if attrs else {}
        ctype = ONNX_OP_TYPES[op]
        if op == "Conv":
            group = int(attrs.get("group", 1))
            if group > 1 and group == ins[0].shape[1]:
                ctype = "dwconv"
        elif op == "MatMul":  # emitted for linear layers only: a constant 2-D weight
            ctype = "fc"
        elif op == "ReduceMean":
            axes = attrs.get("axes")
            if axes is not None and len(ins[0].shape) == 4 and \
                    sorted(a % 4 for a in axes) == [2, 3]:
                ctype = "gap"
        if "kernel_shape" in attrs:
            attrs["ks"] = list(attrs.pop("kernel_shape"))
        if ctype == "split" and "axis" in attrs:
            attrs["split_dim"] = attrs.pop("axis")
        base = hint or op
        counts, nodes = self.counts, self.nodes
        n = counts.get(base, 0)
        counts[base] = n + 1
        name = base if n == 0 else f"{base}_{n}"
        while name in nodes:
            n += 1
            name = f"{base}_{n}"
        # (the shapes of _Data are tuples of ints already: NHWC lists made directly)
        in_shapes = []
        if len(ins) == 1:
            d = ins[0]
            if d.piece is not None:
                d.piece[0] = True
            inputs = [] if d.src is None else [d.src]
            s = d.shape
            in_shapes.append([s[0], s[2], s[3], s[1]] if len(s) == 4 else list(s))
        else:
            for d in ins:
                if d.piece is not None:
                    d.piece[0] = True
                s = d.shape
                in_shapes.append([s[0], s[2], s[3], s[1]] if len(s) == 4 else list(s))
            inputs = list(dict.fromkeys(d.src for d in ins if d.src is not None))
        made, out_shapes = [], []
        for o in outs:
            if exact:
                d = _new_data(_Data)
                d.shape, d.src, d.piece = o, name, None
            else:
                d = _Data(o, name)
            made.append(d)
            s = d.shape
            out_shapes.append([s[0], s[2], s[3], s[1]] if len(s) == 4 else list(s))
        nodes[name] = OpNode(name, ctype, inputs, [], in_shapes, out_shapes, attrs, op)
        return made

    def emit1(self, op: str, ins: list[_Data], out: Shape, attrs: dict | None = None,
              hint: str = "", exact: bool = False) -> _Data:
        return self.emit(op, ins, [out], attrs, hint, False, exact)[0]

    def emit_slice(self, src: _Data, out: Shape, hint: str) -> _Data:
        """A ``Slice`` of ``src``: the slices of one tensor share one ``split`` node whose
        output shapes are those of the slices that are used."""
        piece = [False]
        hit = self.slice_of.get(id(src))
        if hit is None or hit[0] is not src:
            name = self.emit1("Slice", [src], out, {}, hint).src
            self.slice_of[id(src)] = (src, name)
        else:
            name = hit[1]
        self.pieces.setdefault(name, []).append((piece, _nhwc(out)))
        return _Data(out, name, piece)

    def finish(self, outputs: list[_Data], label: str) -> OpGraph:
        for d in outputs:
            if d.piece is not None:
                d.piece[0] = True
        for name, pieces in self.pieces.items():
            self.nodes[name].output_shapes = [s for used, s in pieces if used[0]]
        live: set[str] = set()
        stack = [d.src for d in outputs if d.src is not None]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(self.nodes[n].inputs)
        nodes = {k: v for k, v in self.nodes.items() if k in live}
        for n in nodes.values():
            for p in n.inputs:
                nodes[p].outputs.append(n.name)
        graph_outputs = {d.src for d in outputs}
        # (every input is a live node, linked both ways just above)
        graph = OpGraph._from_linked(nodes, name=label)
        bn_params = self.bn_params
        for name in [k for k in nodes if k in bn_params]:  # (in graph order)
            bn = graph.nodes.get(name)
            if bn is None or len(bn.inputs) != 1:
                continue
            conv = graph.nodes[bn.inputs[0]]
            if conv.source_op == "Conv" and conv.outputs == [name] and \
                    conv.name in self.conv_params and conv.name not in self.shape_queried and \
                    conv.name not in graph_outputs:
                graph.remove_node(name)
        fold_batchnorm(graph)
        fuse_layer_norm(graph)
        return graph


# ---------------------------------------------------------------------------- op handlers

class _Ops:
    """Shape rules and ONNX emission of each mapped torch operation."""

    def __init__(self, torch: Any, builder: _Builder) -> None:
        self.torch = torch
        self.b = builder

    # -- elementwise / unary
    def unary(self, op: str, x: _Data, attrs: dict | None = None, key: Any = None,
              out: Shape | None = None) -> _Data:
        if key is None:  # (the key of no attributes, key({}), is ())
            key = self.b.key(attrs) if attrs else ()
        k = (op, key, id(x))
        self.b.keep.append(x)
        # (every caller's ``out`` is computed from x.shape with int arithmetic: exact)
        return self.b.cached(k, lambda: self.b.emit1(op, [x], x.shape if out is None else out,
                                                     attrs, op, True))

    def binary(self, op: str, a: Any, b: Any) -> _Data:
        torch = self.torch
        # TorchScript's peephole pass drops x + 0, x - 0, x * 1 and x / 1 (Python's
        # sum([a, b]) starts with 0 + a).
        for x, c in ((a, b), (b, a)):
            if isinstance(x, _Data) and isinstance(c, (int, float)) and \
                    not isinstance(c, bool) and (x is a or op in ("Add", "Mul")) and \
                    c == (0 if op in ("Add", "Sub") else 1):
                return x
        ins = [v for v in (a, b) if isinstance(v, _Data)]
        out = _broadcast(_shape_of(a, torch), _shape_of(b, torch))
        return self.b.cached((op, self.b.key(a), self.b.key(b)),
                             lambda: self.b.emit1(op, ins, out, {}, op, True))

    def clip(self, x: _Data, lo: Any, hi: Any) -> _Data:
        if _has_data(lo) or _has_data(hi):
            raise _Unsupported("clamp bounds computed from activations")
        if lo is None and hi is None:
            raise RuntimeError("clamp: at least one of min and max must not be None")
        return self.unary("Clip", x, {}, key=("clip", self.b.key(lo), self.b.key(hi)))

    def hardswish(self, x: _Data) -> _Data:
        def make() -> _Data:
            hs = self.b.emit1("HardSigmoid", [x], x.shape, {"alpha": _f32(1 / 6)}, "", True)
            return self.b.emit1("Mul", [x, hs], x.shape, {}, "", True)
        self.b.keep.append(x)
        return self.b.cached(("hardswish", id(x)), make)

    def silu(self, x: _Data) -> _Data:
        def make() -> _Data:
            s = self.b.emit1("Sigmoid", [x], x.shape, {}, "", True)
            return self.b.emit1("Mul", [x, s], x.shape, {}, "", True)
        self.b.keep.append(x)
        return self.b.cached(("silu", id(x)), make)

    def gelu(self, x: _Data, approximate: str) -> _Data:
        if approximate != "none":
            raise _Unsupported(f"gelu with approximate={approximate!r}")

        def make() -> _Data:  # the exporter's x * (1 + erf(x / sqrt 2)) * 0.5 (opset 13)
            erf = self.b.emit1("Erf", [self.b.emit1("Div", [x], x.shape, {})], x.shape, {})
            one_plus = self.b.emit1("Add", [erf], x.shape, {})
            return self.b.emit1("Mul", [self.b.emit1("Mul", [x, one_plus], x.shape, {})],
                                x.shape, {})
        self.b.keep.append(x)
        return self.b.cached(("gelu", id(x)), make)

    def layer_norm(self, x: _Data, normalized_shape: Any, weight: Any, bias: Any,
                   eps: float) -> _Data:
        if _has_data([weight, bias]):
            raise _Unsupported("layer norm weights computed from activations")
        dims = [normalized_shape] if isinstance(normalized_shape, int) else \
            list(normalized_shape)
        if not dims or list(x.shape[-len(dims):]) != [int(d) for d in dims]:
            raise _Unsupported(f"layer norm over {dims} of a {list(x.shape)} tensor")
        axes = list(range(-len(dims), 0))
        reduced = tuple(1 if i >= len(x.shape) - len(dims) else d
                        for i, d in enumerate(x.shape))

        def make() -> _Data:  # the exporter's decomposition (opset 13 has no LayerNorm op;
            # finish() fuses it into one layernorm node, as onnx_to_graph does the export)
            b = self.b
            centred = b.emit1("Sub", [x, b.emit1("ReduceMean", [x], reduced, {"axes": axes})],
                              x.shape, {})
            var = b.emit1("ReduceMean", [b.emit1("Pow", [centred], x.shape, {})], reduced,
                          {"axes": axes})
            std = b.emit1("Sqrt", [b.emit1("Add", [var], reduced, {})], reduced, {})
            out = b.emit1("Div", [centred, std], x.shape, {})
            if weight is not None:
                out = b.emit1("Mul", [out], x.shape, {})
            if bias is not None:
                out = b.emit1("Add", [out], x.shape, {})
            return out

        return self.b.cached(("layer_norm", self.b.key([x, weight, bias]), tuple(axes), eps),
                             make)

    # -- layers
    def conv(self, x: _Data, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
             groups: int) -> _Data:
        torch = self.torch
        if not isinstance(weight, torch.Tensor) or isinstance(bias, _Data):
            raise _Unsupported("convolution weights computed from activations")
        wshape = weight.shape
        try:
            spec = _CONV_SPECS[stride, padding, dilation, groups, wshape]
        except (KeyError, TypeError):  # (TypeError: an argument given as a list)
            spec = _conv_spec(stride, padding, dilation, groups, wshape)
        nd, same, s, p, d, k, cout, cin, key, err = spec
        shape = x.shape
        if len(shape) == nd + 1:
            raise _Unsupported(f"unbatched input of shape {tuple(shape)} to a {nd}-D "
                               "convolution: give the input shape with its batch dimension, "
                               f"{(1, *shape)}")
        if len(shape) != nd + 2:
            raise _Unsupported("only 1-D and 2-D convolutions are mapped")
        if err is not None:
            raise _Unsupported(err)
        if shape[1] != cin:
            raise RuntimeError(f"convolution with weight of size {list(wshape)} and groups="
                               f"{key[3]} expects {cin} input channels, got input of size "
                               f"{list(shape)}")
        if same:  # the exporter writes auto_pad (upper) and no pads: the size is kept
            out = (shape[0], cout, *shape[2:])
        elif nd == 2:  # (_conv_out without ceil: (size + 2 p - d (k - 1) - 1) // s + 1)
            out = (shape[0], cout,
                   (shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
                   (shape[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)
        else:
            out = (shape[0], cout, _conv_out(shape[2], k[0], s[0], p[0], d[0]))
        if min(out[2:]) < 1:
            raise RuntimeError(f"convolution kernel {k} (dilation {d}) larger than the padded "
                               f"input {list(shape)} (padding {p})")
        b = self.b
        b.keep.append(x)
        b.keep.append(weight)  # (x and weight are known activation and tensor: keyed by id)
        ck = ("conv", id(x), id(weight), ("NoneType", None) if bias is None else b.key(bias),
              *key)
        if not b.no_cse:
            hit = b.cse.get(ck)
            if hit is not None:
                return hit
        # the attributes in the order emit used to leave them in (kernel_shape renamed ks,
        # last); lists copied per node
        attrs = {"dilations": list(d), "group": key[3], "pads": p + p, "strides": list(s),
                 # what the weights take, as the ONNX reader records it for validation
                 "in_channels": cin}
        if same:
            attrs["auto_pad"] = "SAME_UPPER"
        attrs["ks"] = list(k)
        r = b.emit("Conv", [x], [out], attrs, "", True, True)[0]
        b.conv_params.add(r.src)
        if not b.no_cse:
            b.cse[ck] = r
        return r

    def batch_norm(self, x: _Data, mean: Any, var: Any, weight: Any, bias: Any,
                   training: bool, momentum: float | None, eps: float,
                   channels: int | None = None) -> _Data:
        """(``channels``: the size of ``mean`` where the caller knows it, a layer's
        ``num_features``, read faster than the tensor's size.)"""
        if type(mean) is _Data or type(var) is _Data or type(weight) is _Data or \
                type(bias) is _Data:
            raise _Unsupported("batch norm statistics computed from activations")
        if training or mean is None or var is None:
            raise _Unsupported("batch norm without running statistics (training mode or "
                               "track_running_stats=False)")
        shape = x.shape
        if (mean.shape[0] if channels is None else channels) != shape[1]:  # (IndexError: 1-D)
            raise RuntimeError(f"batch norm with {mean.shape[0]} running statistics on input of"
                               f" size {list(shape)}")
        b = self.b
        b.keep.append(x)
        key = b.key
        ck = ("bn", id(x), key(mean), key(var), key(weight), key(bias), eps, momentum)
        if not b.no_cse:
            hit = b.cse.get(ck)
            if hit is not None:
                return hit
        attrs = {"epsilon": _f32(eps),
                 "momentum": _f32(1.0 - (momentum if momentum is not None else 0.0))}
        r = b.emit("BatchNormalization", [x], [x.shape], attrs, "", True, True)[0]
        b.bn_params.add(r.src)
        if not b.no_cse:
            b.cse[ck] = r
        return r

    def linear(self, x: _Data, weight: Any, bias: Any) -> _Data:
        if not isinstance(weight, self.torch.Tensor) or isinstance(bias, _Data):
            raise _Unsupported("linear weights computed from activations")
        if len(x.shape) != 2:
            raise _Unsupported("linear layers are mapped for 2-D inputs only")
        wshape = weight.shape
        if len(wshape) != 2 or x.shape[1] != wshape[1]:
            raise RuntimeError(f"linear layer with weight of size {list(wshape)} on input of "
                               f"size {list(x.shape)} (inner sizes differ)")
        out = (x.shape[0], int(wshape[0]))

        def make() -> _Data:
            features = {"in_features": int(weight.shape[1])}  # (out, in), as ONNX records it
            if bias is None:
                return self.b.emit1("MatMul", [x], out, features)
            return self.b.emit1("Gemm", [x], out, {"alpha": 1.0, "beta": 1.0, "transB": 1,
                                                   **features})

        return self.b.cached(("linear", self.b.key([x, weight, bias])), make)

    def pool(self, kind: str, x: _Data, kernel: Any, stride: Any, padding: Any, dilation: Any,
             ceil_mode: bool, count_include_pad: bool = True) -> _Data:
        if len(x.shape) != 4:
            raise _Unsupported("only 2-D pooling is mapped")
        k = _pair(kernel)
        s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) \
            else _pair(stride)
        p, d = _pair(padding), _pair(dilation)
        n, c, h, w = x.shape
        for i in (0, 1):
            if k[i] < 1 or s[i] < 1 or d[i] < 1 or p[i] < 0:
                raise RuntimeError(f"pooling with kernel {k}, stride {s}, padding {p}, dilation"
                                   f" {d} (kernel, stride and dilation must be positive)")
            if p[i] > k[i] // 2:  # (torch's check, whatever the dilation)
                raise RuntimeError(f"pooling padding {p} larger than half the kernel {k}")
        out = (n, c, _conv_out(h, k[0], s[0], p[0], d[0], ceil_mode),
               _conv_out(w, k[1], s[1], p[1], d[1], ceil_mode))
        if out[2] < 1 or out[3] < 1:
            raise RuntimeError(f"pooling kernel {k} (dilation {d}) larger than the padded input"
                               f" {list(x.shape)} (padding {p}): output size {list(out)}")
        attrs: dict[str, Any] = {"ceil_mode": int(bool(ceil_mode))}
        if kind == "MaxPool":
            attrs["dilations"] = d
        else:
            attrs["count_include_pad"] = int(bool(count_include_pad))
        attrs.update({"kernel_shape": k, "pads": p + p, "strides": s})
        return self.unary(kind, x, attrs, out=out)

    def adaptive_pool(self, kind: str, x: _Data, output_size: Any) -> _Data:
        if len(x.shape) != 4:
            raise _Unsupported("only 2-D pooling is mapped")
        n, c, h, w = x.shape
        size = _pair(output_size)
        size = [h if size[0] is None else size[0], w if size[1] is None else size[1]]
        if size[0] < 0 or size[1] < 0:
            raise RuntimeError(f"adaptive pooling to a negative size {size}")
        if size == [1, 1] and kind == "avg":
            return self.unary("GlobalAveragePool", x, {}, out=(n, c, 1, 1))
        if h % size[0] or w % size[1]:
            raise _Unsupported(f"adaptive pooling from {h}x{w} to {size[0]}x{size[1]} "
                               "(the exporter needs a divisible size)")
        k = [h // size[0], w // size[1]]
        # The exporter writes it as a pool whose kernel and stride are the ratio of the sizes.
        return self.unary("MaxPool" if kind == "max" else "AveragePool", x,
                          {"kernel_shape": k, "pads": [0, 0, 0, 0], "strides": k},
                          out=(n, c, size[0], size[1]))

    # -- memory ops
    def concat(self, tensors: Sequence[Any], dim: int) -> Any:
        torch = self.torch
        shapes = [_shape_of(t, torch) for t in tensors]
        if not shapes:
            raise RuntimeError("cat of an empty list of tensors")
        first = shapes[0]
        rank = len(first)
        ax = _dim(dim, rank)
        total = 0
        head, tail = first[:ax], first[ax + 1:]
        for s in shapes:
            if len(s) != rank or s[:ax] != head or s[ax + 1:] != tail:
                raise RuntimeError(f"cat along dim {dim} of tensors of sizes "
                                   f"{[list(v) for v in shapes]} (they must match except "
                                   "along that dim)")
            total += s[ax]
        out = list(first)
        out[ax] = total
        ins = [t for t in tensors if isinstance(t, _Data)]
        return self.b.cached(("cat", self.b.key(list(tensors)), dim),
                             lambda: self.b.emit1("Concat", ins, tuple(out), {"axis": int(dim)}))

    def reshape(self, x: _Data, shape: Sequence[int]) -> _Data:
        shape = [int(s) for s in shape]
        total = math.prod(x.shape)
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known <= 0 or total % known or shape.count(-1) > 1:
                raise RuntimeError(f"cannot reshape {list(x.shape)} to {shape} (one -1 at "
                                   "most, the other sizes positive and dividing the "
                                   "element count)")
            shape[shape.index(-1)] = total // known
        if math.prod(shape) != total or (shape and min(shape) < 0):
            raise RuntimeError(f"cannot reshape {list(x.shape)} to {shape}")
        return self.unary("Reshape", x, {}, key=("reshape", tuple(shape)), out=tuple(shape))

    def flatten(self, x: _Data, start: int, end: int) -> _Data:
        rank = len(x.shape)
        if rank == 0:
            raise _Unsupported("flatten of a scalar")
        s, e = _dim(start, rank), _dim(end, rank)
        if s > e:
            raise RuntimeError(f"flatten() has invalid args: start_dim {start} comes after "
                               f"end_dim {end}")
        out = x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:]
        if rank > 1 and e == rank - 1 and s == 1:
            return self.unary("Flatten", x, {"axis": 1}, out=out)
        if rank > 1 and s == 0 and e == rank - 2:
            return self.unary("Flatten", x, {"axis": e + 1}, out=out)
        return self.unary("Reshape", x, {}, key=("reshape", out), out=out)

    def transpose(self, x: _Data, perm: Sequence[int]) -> _Data:
        rank = len(x.shape)
        if len(perm) != rank:
            raise RuntimeError(f"permute of a {rank}-D tensor with {len(perm)} dims "
                               f"({list(perm)})")
        if rank:
            lo, hi = min(perm), max(perm)
            if lo < -rank or hi >= rank:
                _dim(lo if lo < -rank else hi, rank)  # (raises)
        perm = [int(p) % rank for p in perm]
        if len(set(perm)) != rank:
            raise RuntimeError(f"permute with dims {perm}: a dimension is repeated")
        base = x
        # The exporter composes consecutive transposes and drops identity ones.
        if x.src is not None and x.src in self.b.perm_input:
            prev = self.b.nodes[x.src].attrs["perm"]
            base = self.b.perm_input[x.src]
            perm = [prev[p] for p in perm]
        if perm == list(range(rank)):
            return base
        out = tuple(base.shape[p] for p in perm)

        def make() -> _Data:
            r = self.b.emit1("Transpose", [base], out, {"perm": perm})
            self.b.perm_input[r.src] = base
            return r

        self.b.keep.append(base)
        return self.b.cached(("transpose", id(base), tuple(perm)), make)

    def split(self, x: _Data, sizes: list[int], dim: int, form: str) -> tuple:
        ax = _dim(dim, len(x.shape))
        if sum(sizes) != x.shape[ax] or min(sizes, default=0) < 0:
            raise RuntimeError(f"split of size {x.shape[ax]} (dim {dim} of {list(x.shape)}) "
                               f"into sizes {sizes}")
        outs = [x.shape[:ax] + (s,) + x.shape[ax + 1:] for s in sizes]
        # split(x, int) and split(x, [sizes]) are distinct ATen ops: never merged
        return self.b.cached(("split", form, self.b.key(x), tuple(sizes), dim), lambda: tuple(
            self.b.emit("Split", [x], outs, {"axis": int(dim), "split": list(sizes)})))

    def chunk(self, x: _Data, chunks: int, dim: int) -> tuple:
        ax = _dim(dim, len(x.shape))
        if chunks < 1:
            raise RuntimeError(f"chunk expects a positive number of chunks, got {chunks}")
        size = x.shape[ax]
        step = -(-size // chunks)
        outs = []
        for start in range(0, size, step):
            outs.append(x.shape[:ax] + (min(step, size - start),) + x.shape[ax + 1:])
        return self.b.cached(("chunk", self.b.key(x), chunks, dim), lambda: tuple(
            self.b.emit_slice(x, o, "Slice") for o in outs))

    def getitem(self, x: _Data, idx: Any) -> _Data:
        rank = len(x.shape)
        items = list(idx) if isinstance(idx, tuple) else [idx]
        if len(items) > rank or any(
                i is None or i is Ellipsis or not isinstance(i, (int, slice)) or
                isinstance(i, bool) or (isinstance(i, slice) and (
                    _has_data([i.start, i.stop, i.step]) or i.step not in (None, 1)))
                for i in items):
            raise _Unsupported(f"indexing with {idx!r}")
        real = [(p, i) for p, i in enumerate(items) if not (isinstance(i, slice) and
                                                             i == slice(None))]
        if not real:
            return x
        if len(real) > 1:
            raise _Unsupported(f"indexing on more than one axis ({idx!r})")
        pos, i = real[0]
        key = ("getitem", self.b.key(x), self.b.key(idx))
        if isinstance(i, int):
            if not -x.shape[pos] <= i < x.shape[pos]:
                raise _Unsupported(f"index {i} out of range for axis {pos} of {list(x.shape)}")
            out = x.shape[:pos] + x.shape[pos + 1:]
            return self.b.cached(key, lambda: self.b.emit1("Gather", [x], out, {"axis": pos}))
        n = len(range(x.shape[pos])[i])
        out = x.shape[:pos] + (n,) + x.shape[pos + 1:]
        return self.b.cached(key, lambda: self.b.emit_slice(x, out, "Slice"))

    def mean(self, x: _Data, dim: Any, keepdim: bool) -> _Data:
        dims = None if dim is None else [dim] if isinstance(dim, int) else list(dim)
        if not dims:  # (None, or an empty list: torch reduces every axis)
            raise _Unsupported("mean over all axes")
        rank = len(x.shape)
        red = _dims(dims, rank)
        dims = [int(d) for d in dims]
        out = tuple(1 if i in red else s for i, s in enumerate(x.shape)
                    if keepdim or i not in red)
        return self.unary("ReduceMean", x, {"axes": dims, "keepdims": int(bool(keepdim))},
                          out=out)

    def pad(self, x: _Data, pad: Sequence[int], mode: str, value: Any) -> _Data:
        pad = [int(p) for p in pad]
        rank = len(x.shape)
        if len(pad) % 2 or len(pad) // 2 > rank:
            raise RuntimeError(f"pad of length {len(pad)} on a {rank}-D tensor (it takes a "
                               "pair of sizes per dimension, at most as many pairs as "
                               "dimensions)")
        if mode != "constant" and len(pad) // 2 not in (rank - 2, rank - 1):
            raise RuntimeError(f"{mode} padding of length {len(pad)} on a {rank}-D tensor "
                               f"(it pads the last {rank - 2} or {rank - 1} dimensions)")
        out = list(x.shape)
        for i in range(len(pad) // 2):
            size = out[-1 - i]
            lo, hi = pad[2 * i], pad[2 * i + 1]
            if (mode == "reflect" and max(lo, hi) >= size) or (
                    mode == "circular" and max(lo, hi) > size):
                raise RuntimeError(f"{mode} padding {pad} does not fit a {list(x.shape)} "
                                   "tensor")
            out[-1 - i] = size + lo + hi
            if out[-1 - i] < 0:
                raise RuntimeError(f"padding {pad} makes a {list(x.shape)} tensor's size "
                                   "negative")
        return self.unary("Pad", x, {"mode": mode}, key=("pad", tuple(pad), mode, value),
                          out=tuple(out))

    def unsqueeze(self, x: _Data, dim: int) -> _Data:
        d = _dim(dim, len(x.shape) + 1)
        return self.unary("Unsqueeze", x, {}, key=("unsqueeze", d),
                          out=x.shape[:d] + (1,) + x.shape[d:])

    def squeeze(self, x: _Data, dim: Any) -> _Data:
        if dim is None:
            out = tuple(s for s in x.shape if s != 1)
        else:
            dims = {_dim(d, len(x.shape)) for d in ([dim] if isinstance(dim, int) else dim)}
            out = tuple(s for i, s in enumerate(x.shape) if not (i in dims and s == 1))
        return self.unary("Squeeze", x, {}, key=("squeeze", self.b.key(dim)), out=out)

    def stack(self, tensors: Sequence[Any], dim: int) -> _Data:
        torch = self.torch
        shapes = [_shape_of(t, torch) for t in tensors]
        if not shapes:
            raise RuntimeError("stack of an empty list of tensors")
        if any(s != shapes[0] for s in shapes):
            raise RuntimeError(f"stack of tensors of sizes {[list(s) for s in shapes]} (they "
                               "must all have the same size)")
        ax = _dim(dim, len(shapes[0]) + 1)

        def make() -> _Data:
            # the exporter writes Unsqueeze per input, then Concat
            ins = []
            for t, shp in zip(tensors, shapes):
                if isinstance(t, _Data):
                    ins.append(self.b.emit1("Unsqueeze", [t], shp[:ax] + (1,) + shp[ax:], {}))
            out = shapes[0][:ax] + (len(tensors),) + shapes[0][ax:]
            return self.b.emit1("Concat", ins, out, {"axis": int(dim)})

        return self.b.cached(("stack", self.b.key(list(tensors)), dim), make)

    def reduce_sum(self, x: _Data, dim: Any, keepdim: bool) -> _Data:
        rank = len(x.shape)
        dims = list(range(rank)) if dim is None else \
            [dim] if isinstance(dim, int) else list(dim)
        if not dims and rank:  # (an empty list: torch reduces every axis)
            raise _Unsupported("sum over an empty list of dims")
        red = _dims(dims, rank)
        out = tuple(1 if i in red else s for i, s in enumerate(x.shape)
                    if keepdim or i not in red)
        return self.unary("ReduceSum", x, {"keepdims": int(bool(keepdim))},
                          key=("sum", self.b.key(dim), bool(keepdim)), out=out)

    def interpolate(self, x: _Data, size: Any, scale_factor: Any, mode: str,
                    align_corners: Any, recompute_scale_factor: Any, antialias: bool) -> _Data:
        if mode != "nearest" or size is not None or scale_factor is None or antialias or \
                align_corners is not None or recompute_scale_factor:
            raise _Unsupported(f"interpolate with mode={mode!r}, size={size!r}, "
                               f"recompute_scale_factor={recompute_scale_factor!r} (only "
                               "nearest with a scale factor is mapped)")
        if len(x.shape) != 4:
            raise _Unsupported("only 2-D interpolation is mapped")
        factors = [float(f) for f in (scale_factor if isinstance(scale_factor, (list, tuple))
                                      else (scale_factor, scale_factor))]
        if len(factors) != 2 or not all(f.is_integer() and f >= 1 for f in factors):
            raise _Unsupported(f"interpolate with scale_factor={scale_factor!r} (whole "
                               "factors only)")
        n, c, h, w = x.shape
        out = (n, c, int(h * factors[0]), int(w * factors[1]))
        # what the exporter writes for nearest upsampling (opset 13), the scales a constant
        attrs = {"coordinate_transformation_mode": "asymmetric", "cubic_coeff_a": -0.75,
                 "mode": "nearest", "nearest_mode": "floor"}
        return self.unary("Resize", x, attrs, key=("resize", tuple(factors)), out=out)

    def softmax(self, op: str, x: _Data, dim: Any) -> _Data:
        if dim is None:
            raise _Unsupported("softmax without dim")
        _dim(dim, len(x.shape))
        return self.unary(op, x, {"axis": int(dim)})


# ---------------------------------------------------------------------------- dispatch table

def _arg(args: Sequence, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _dims_arg(args: Sequence, kwargs: dict, name: str) -> list:
    if len(args) == 2 and isinstance(args[1], (list, tuple)):
        return list(args[1])
    if len(args) > 1:
        return list(args[1:])
    return list(kwargs[name])


def _build_table(torch: Any) -> tuple[dict, set]:
    """``{torch callable: handler(ops, args, kwargs)}`` and the in-place callables."""
    F = torch.nn.functional
    T = torch.Tensor

    def unary(op: str, attrs: dict | None = None) -> Callable:
        return lambda o, a, k: o.unary(op, a[0], attrs)

    def binary(op: str, swap: bool = False, inplace: bool = False) -> Callable:
        def h(o: _Ops, a: Sequence, k: dict) -> Any:
            if k.get("alpha", 1) != 1:
                raise _Unsupported("alpha != 1")
            x, y = a[0], (a[1] if len(a) > 1 else k.get("other"))
            if k.get("rounding_mode") is not None:
                raise _Unsupported("division with rounding_mode")
            r = o.binary(op, y, x) if swap else o.binary(op, x, y)
            if inplace and r.shape != x.shape:  # x cannot take the broadcast result
                raise RuntimeError(f"in-place {op} of sizes {list(x.shape)} and "
                                   f"{list(_shape_of(y, torch))}: the result, of size "
                                   f"{list(r.shape)}, does not fit the tensor modified")
            return r
        return h

    def hardtanh(o, a, k):
        return o.clip(a[0], _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0))

    def clamp(o, a, k):
        return o.clip(a[0], _arg(a, k, 1, "min"), _arg(a, k, 2, "max"))

    def conv(o, a, k):  # conv1d and conv2d: the weight's rank says which
        return o.conv(a[0], _arg(a, k, 1, "weight"), _arg(a, k, 2, "bias"),
                      _arg(a, k, 3, "stride", 1), _arg(a, k, 4, "padding", 0),
                      _arg(a, k, 5, "dilation", 1), _arg(a, k, 6, "groups", 1))

    def batch_norm(o, a, k):
        return o.batch_norm(a[0], _arg(a, k, 1, "running_mean"), _arg(a, k, 2, "running_var"),
                            _arg(a, k, 3, "weight"), _arg(a, k, 4, "bias"),
                            _arg(a, k, 5, "training", False), _arg(a, k, 6, "momentum", 0.1),
                            _arg(a, k, 7, "eps", 1e-5))

    def max_pool(o, a, k):
        if _arg(a, k, 6, "return_indices", False):
            raise _Unsupported("max pooling with return_indices")
        return o.pool("MaxPool", a[0], _arg(a, k, 1, "kernel_size"), _arg(a, k, 2, "stride"),
                      _arg(a, k, 3, "padding", 0), _arg(a, k, 4, "dilation", 1),
                      _arg(a, k, 5, "ceil_mode", False))

    def avg_pool(o, a, k):
        if _arg(a, k, 6, "divisor_override") is not None:
            raise _Unsupported("average pooling with divisor_override")
        return o.pool("AveragePool", a[0], _arg(a, k, 1, "kernel_size"),
                      _arg(a, k, 2, "stride"), _arg(a, k, 3, "padding", 0), 1,
                      _arg(a, k, 4, "ceil_mode", False), _arg(a, k, 5, "count_include_pad", True))

    def adaptive(kind: str) -> Callable:
        def h(o, a, k):
            if kind == "max" and _arg(a, k, 2, "return_indices", False):
                raise _Unsupported("adaptive max pooling with return_indices")
            return o.adaptive_pool(kind, a[0], _arg(a, k, 1, "output_size"))
        return h

    def split(o, a, k):
        x, size = a[0], _arg(a, k, 1, "split_size_or_sections", k.get("split_size"))
        dim = _arg(a, k, 2, "dim", 0)
        if isinstance(size, int):
            total = x.shape[_dim(dim, len(x.shape))]
            if size < 1:
                raise RuntimeError(f"split_size must be positive, got {size}")
            sizes = [size] * (total // size) + ([total % size] if total % size else [])
            return o.split(x, sizes, dim, "int")
        return o.split(x, [int(s) for s in size], dim, "list")

    def passthrough(o, a, k):
        return a[0]

    def size(o, a, k):
        x = a[0]
        if x.src is not None:
            o.b.shape_queried.add(x.src)
        dim = _arg(a, k, 1, "dim")
        return torch.Size(x.shape) if dim is None else x.shape[_dim(dim, len(x.shape))]

    def getitem(o, a, k):
        return o.getitem(a[0], a[1])

    def softmax(op: str) -> Callable:
        return lambda o, a, k: o.softmax(op, a[0], _arg(a, k, 1, "dim"))

    table: dict[Any, Callable] = {
        torch.conv2d: conv, torch.conv1d: conv, F.batch_norm: batch_norm,
        F.linear: lambda o, a, k: o.linear(a[0], _arg(a, k, 1, "weight"), _arg(a, k, 2, "bias")),
        F.relu: unary("Relu"), torch.relu: unary("Relu"), torch.relu_: unary("Relu"),
        F.relu6: lambda o, a, k: o.clip(a[0], 0.0, 6.0), F.hardtanh: hardtanh,
        torch.clamp: clamp, torch.clip: clamp,
        torch.sigmoid: unary("Sigmoid"), F.sigmoid: unary("Sigmoid"),
        torch.tanh: unary("Tanh"), F.tanh: unary("Tanh"),
        F.hardsigmoid: unary("HardSigmoid", {"alpha": _f32(1 / 6)}),
        F.hardswish: lambda o, a, k: o.hardswish(a[0]),
        F.silu: lambda o, a, k: o.silu(a[0]),
        F.leaky_relu: lambda o, a, k: o.unary(
            "LeakyRelu", a[0], {"alpha": _f32(_arg(a, k, 1, "negative_slope", 0.01))}),
        F.max_pool2d: max_pool, F.avg_pool2d: avg_pool,
        F.adaptive_avg_pool2d: adaptive("avg"), F.adaptive_max_pool2d: adaptive("max"),
        torch.cat: lambda o, a, k: o.concat(_arg(a, k, 0, "tensors"), _arg(a, k, 1, "dim", 0)),
        torch.concat: lambda o, a, k: o.concat(_arg(a, k, 0, "tensors"),
                                               _arg(a, k, 1, "dim", 0)),
        torch.flatten: lambda o, a, k: o.flatten(a[0], _arg(a, k, 1, "start_dim", 0),
                                                 _arg(a, k, 2, "end_dim", -1)),
        F.dropout: passthrough, F.dropout2d: passthrough, torch.dropout: passthrough,
        F.softmax: softmax("Softmax"), torch.softmax: softmax("Softmax"),
        F.log_softmax: softmax("LogSoftmax"), torch.log_softmax: softmax("LogSoftmax"),
        torch.split: split, torch.chunk: lambda o, a, k: o.chunk(
            a[0], _arg(a, k, 1, "chunks"), _arg(a, k, 2, "dim", 0)),
        torch.mean: lambda o, a, k: o.mean(a[0], _arg(a, k, 1, "dim"),
                                           _arg(a, k, 2, "keepdim", False)),
        F.pad: lambda o, a, k: o.pad(a[0], _arg(a, k, 1, "pad"),
                                     _arg(a, k, 2, "mode", "constant"),
                                     _arg(a, k, 3, "value", None)),
        torch.add: binary("Add"), torch.sub: binary("Sub"), torch.mul: binary("Mul"),
        torch.div: binary("Div"),
        torch.transpose: lambda o, a, k: _transpose(o, a, k),
        torch.permute: lambda o, a, k: o.transpose(a[0], _dims_arg(a, k, "dims")),
        torch.reshape: lambda o, a, k: o.reshape(a[0], _dims_arg(a, k, "shape")),
        torch.unsqueeze: lambda o, a, k: o.unsqueeze(a[0], _arg(a, k, 1, "dim")),
        torch.stack: lambda o, a, k: o.stack(_arg(a, k, 0, "tensors"), _arg(a, k, 1, "dim", 0)),
        torch.sum: lambda o, a, k: o.reduce_sum(a[0], _arg(a, k, 1, "dim"),
                                                _arg(a, k, 2, "keepdim", False)),
        torch.squeeze: lambda o, a, k: o.squeeze(a[0], _arg(a, k, 1, "dim")),
        F.gelu: lambda o, a, k: o.gelu(a[0], _arg(a, k, 1, "approximate", "none")),
        F.layer_norm: lambda o, a, k: o.layer_norm(
            a[0], _arg(a, k, 1, "normalized_shape"), _arg(a, k, 2, "weight"),
            _arg(a, k, 3, "bias"), _arg(a, k, 4, "eps", 1e-5)),
        F.interpolate: lambda o, a, k: o.interpolate(
            a[0], _arg(a, k, 1, "size"), _arg(a, k, 2, "scale_factor"),
            _arg(a, k, 3, "mode", "nearest"), _arg(a, k, 4, "align_corners"),
            _arg(a, k, 5, "recompute_scale_factor"), _arg(a, k, 6, "antialias", False)),
    }
    methods: dict[str, Callable] = {
        "add": binary("Add"), "__add__": binary("Add"), "__radd__": binary("Add", swap=True),
        "__iadd__": binary("Add", inplace=True), "add_": binary("Add", inplace=True),
        "sub": binary("Sub"), "__sub__": binary("Sub"), "__rsub__": binary("Sub", swap=True),
        "__isub__": binary("Sub", inplace=True), "sub_": binary("Sub", inplace=True),
        "mul": binary("Mul"), "__mul__": binary("Mul"), "__rmul__": binary("Mul", swap=True),
        "__imul__": binary("Mul", inplace=True), "mul_": binary("Mul", inplace=True),
        "div": binary("Div"), "__truediv__": binary("Div"),
        "__itruediv__": binary("Div", inplace=True), "div_": binary("Div", inplace=True),
        "relu": unary("Relu"), "relu_": unary("Relu"), "sigmoid": unary("Sigmoid"),
        "sigmoid_": unary("Sigmoid"), "tanh": unary("Tanh"), "clamp": clamp, "clip": clamp,
        "clamp_": clamp,
        "size": size, "dim": lambda o, a, k: len(a[0].shape),
        "contiguous": passthrough, "__getitem__": getitem,
        "view": lambda o, a, k: o.reshape(a[0], _dims_arg(a, k, "size")),
        "reshape": lambda o, a, k: o.reshape(a[0], _dims_arg(a, k, "shape")),
        "flatten": lambda o, a, k: o.flatten(a[0], _arg(a, k, 1, "start_dim", 0),
                                             _arg(a, k, 2, "end_dim", -1)),
        "permute": lambda o, a, k: o.transpose(a[0], _dims_arg(a, k, "dims")),
        "transpose": lambda o, a, k: _transpose(o, a, k),
        "unsqueeze": lambda o, a, k: o.unsqueeze(a[0], _arg(a, k, 1, "dim")),
        "squeeze": lambda o, a, k: o.squeeze(a[0], _arg(a, k, 1, "dim")),
        "chunk": lambda o, a, k: o.chunk(a[0], _arg(a, k, 1, "chunks"), _arg(a, k, 2, "dim", 0)),
        "split": split,
        "mean": lambda o, a, k: o.mean(a[0], _arg(a, k, 1, "dim"), _arg(a, k, 2, "keepdim",
                                                                         False)),
        "softmax": softmax("Softmax"), "log_softmax": softmax("LogSoftmax"),
        "sum": lambda o, a, k: o.reduce_sum(a[0], _arg(a, k, 1, "dim"),
                                            _arg(a, k, 2, "keepdim", False)),
    }
    for name, h in methods.items():
        table[getattr(T, name)] = h
    inplace = {getattr(T, n) for n in methods if n.endswith("_") and not n.endswith("__")}
    inplace |= {getattr(T, n) for n in ("__iadd__", "__isub__", "__imul__", "__itruediv__")}
    inplace.add(torch.relu_)
    return table, inplace


def _inplace_positions(torch: Any) -> dict:
    """Position of the ``inplace`` argument of the activations that take one."""
    F = torch.nn.functional
    return {F.relu: 1, F.relu6: 1, F.hardtanh: 3, F.hardswish: 1, F.hardsigmoid: 1,
            F.silu: 1, F.leaky_relu: 2, F.dropout: 3, F.dropout2d: 3}


def _transpose(o: _Ops, a: Sequence, k: dict) -> _Data:
    x = a[0]
    d0, d1 = _arg(a, k, 1, "dim0"), _arg(a, k, 2, "dim1")
    rank = len(x.shape)
    d0, d1 = _dim(d0, rank), _dim(d1, rank)
    perm = list(range(rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return o.transpose(x, perm)


_TABLE: dict | None = None
_INPLACE: set = set()
_INPLACE_POS: dict = {}


# ---------------------------------------------------------------------------- the tracer

def _make_shape_tensor_class(torch: Any) -> type:
    make_subclass = torch.Tensor._make_subclass

    class ShapeTensor(torch.Tensor):
        """A data-less stand-in for an activation; every torch op on it is recorded."""

        _d: _Data
        _session: Any

        @staticmethod
        def __new__(cls, data: _Data, session: Any) -> "ShapeTensor":
            base = _META.get(data.shape)
            if base is None:  # one storage-less tensor per shape, shared by its wrappers
                if len(_META) >= 4096:
                    _META.clear()
                base = _META[data.shape] = torch.empty(data.shape, device="meta")
            t = make_subclass(cls, base)
            t._d = data
            t._session = session
            return t

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: N805
            if args and type(args[0]) is cls:  # the common case: an op on an activation
                return args[0]._session.dispatch(func, args, kwargs or {})
            session = None
            for a in args:
                if isinstance(a, ShapeTensor):
                    session = a._session
                    break
                if isinstance(a, (list, tuple)):
                    for b in a:
                        if isinstance(b, ShapeTensor):
                            session = b._session
                            break
                    if session is not None:
                        break
            if session is None:
                for v in (kwargs or {}).values():
                    if isinstance(v, ShapeTensor):
                        session = v._session
            return session.dispatch(func, args, kwargs or {})

    return ShapeTensor


_SHAPE_TENSOR: type | None = None
# shape -> storage-less ("meta") tensor the shape tensors of that shape wrap, kept across
# conversions (every op on a shape tensor is intercepted: the meta tensor is never written)
_META: dict = {}
_PLAIN = (int, float, bool, str, type(None))


def _func_name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class _Session:
    """One conversion: wraps activations, dispatches intercepted ops, tracks modules."""

    def __init__(self, torch: Any, root: Any) -> None:
        self.torch = torch
        self.builder = _Builder(torch)
        self.ops = _Ops(torch, self.builder)
        self.root = root
        # id(module) -> (its patched forward, call, applies, plain, chain) of the modules
        # _fast_forwards patched: for a layer, call(data) -> (output data, in place?) where
        # applies(data); for a Sequential, chain (see _fast_forwards); plain: its class is
        # called as Module.__call__ calls it
        self.data_calls: dict[int, tuple] = {}

    def wrap(self, v: Any) -> Any:
        t = type(v)
        if t is _Data:
            return _SHAPE_TENSOR(v, self)  # type: ignore[misc]
        if t is tuple:
            return tuple(self.wrap(a) for a in v)
        if t is list:
            return [self.wrap(a) for a in v]
        return v

    def unwrap(self, v: Any) -> Any:
        t = type(v)
        if t is _SHAPE_TENSOR:
            return v._d
        if t in _PLAIN:
            return v
        if isinstance(v, (list, tuple)):
            out = [self.unwrap(a) for a in v]
            return out if isinstance(v, list) else tuple(out)
        if isinstance(v, slice):
            return slice(self.unwrap(v.start), self.unwrap(v.stop), self.unwrap(v.step))
        if isinstance(v, _SHAPE_TENSOR):  # type: ignore[arg-type]
            return v._d
        return v

    def module_label(self, frame: Any = None) -> str:
        """The innermost module whose ``forward`` is on the call stack (found from the
        frames, so that tracking modules costs nothing while nothing fails)."""
        import sys

        nn = self.torch.nn
        f = frame or sys._getframe(1)
        while f is not None:
            obj = f.f_locals.get("self")
            if isinstance(obj, nn.Module) and f.f_code.co_name == "forward":
                names = {id(m): n for n, m in self.root.named_modules()}
                return f"{names.get(id(obj)) or '<root>'} ({type(obj).__name__})"
            f = f.f_back
        return type(self.root).__name__

    def dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        handler = _TABLE.get(func)  # type: ignore[union-attr]
        if handler is None:
            if getattr(func, "__name__", "") == "__get__":
                return self._attribute(func, args)
            raise TorchFrontEndError(
                f"the torch front end does not map {_func_name(func)} (called in module "
                f"{self.module_label()})", module=self.module_label())
        st = _SHAPE_TENSOR
        a = tuple(v._d if type(v) is st else self.unwrap(v) for v in args)
        k = {key: self.unwrap(v) for key, v in kwargs.items()} if kwargs else {}
        pos = _INPLACE_POS.get(func)
        inplace = func in _INPLACE or kwargs.get("inplace") is True or \
            (pos is not None and len(args) > pos and args[pos] is True)
        return self.run(func, handler, self.ops, a, k, inplace,
                        args[0] if args and type(args[0]) is st else None)

    def run(self, func: Any, handler: Callable, *call: Any) -> Any:
        """``handler(*call[:-2])``, the mapping of ``func`` on unwrapped arguments, with the
        in-place semantics (``call[-2]``: whether ``func`` modifies ``call[-1]``, the shape
        tensor it was called on, or None) and the errors of :meth:`dispatch`."""
        inplace, target = call[-2], call[-1]
        return self.result(self.raw(func, handler, *call[:-1]), inplace, target)

    def raw(self, func: Any, handler: Callable, *call: Any) -> Any:
        """``handler(*call[:-1])`` (``call[-1]``: whether ``func`` works in place) with the
        errors of :meth:`dispatch`, its output not wrapped. The common layers' forwards
        (:func:`_fast_forwards`) come here directly, their arguments known to need no
        unwrapping."""
        self.builder.no_cse = call[-1]
        try:
            return handler(*call[:-1])
        except TorchFrontEndError:
            raise
        except Exception as exc:  # (an _Unsupported, or a shape rule met an input it does
            # not cover: the message and the chained cause say which)
            raise self.failure(func, exc)
        finally:
            self.builder.no_cse = False

    def failure(self, func: Any, exc: Exception) -> TorchFrontEndError:
        """The error :meth:`raw` raises where the handler of ``func`` raised ``exc``, its cause
        set (``exc``, or none for an op the front end does not map)."""
        name = _func_name(func)
        if isinstance(exc, _Unsupported):
            err = TorchFrontEndError(
                f"the torch front end cannot map {name} in module {self.module_label()}: {exc}",
                module=self.module_label())
            err.__cause__ = None         # the message says it all (``raise ... from None``)
        else:
            err = TorchFrontEndError(
                f"the torch front end failed on {name} in module {self.module_label()}: "
                f"{type(exc).__name__}: {exc}", module=self.module_label())
            err.__cause__ = exc          # ``raise ... from exc``
        err.__suppress_context__ = True
        return err

    def result(self, out: Any, inplace: bool, target: Any) -> Any:
        """What a torch op returns for the handler's ``out``: ``target`` (the shape tensor it
        was called on, or None) updated when the op works in place, else new shape tensors."""
        if type(out) is _Data:
            if inplace and target is not None:
                target._d = out
                return target
            return _SHAPE_TENSOR(out, self)  # type: ignore[misc]
        return self.wrap(out)

    def _attribute(self, func: Any, args: tuple) -> Any:
        torch = self.torch
        attr = getattr(getattr(func, "__self__", None), "__name__", "")
        x = args[0]._d
        if attr == "shape":
            if x.src is not None:
                self.builder.shape_queried.add(x.src)
            return torch.Size(x.shape)
        if attr == "ndim":
            return len(x.shape)
        if attr == "dtype":
            return torch.float32
        if attr == "device":
            return torch.device("cpu")
        if attr in ("is_cuda", "is_sparse", "is_quantized", "is_meta", "requires_grad"):
            return False
        raise TorchFrontEndError(f"the torch front end does not map the tensor attribute "
                                 f"{attr!r} (read in module {self.module_label()})",
                                 module=self.module_label())


# ---------------------------------------------------------------------------- leaf layers

def _layer_forward(session: Any, m: Any, call: Callable, applies: Callable | None,
                   *args: Any, **kwargs: Any) -> Any:
    """The ``forward`` a common layer ``m`` gets for a pass (bound to it with
    ``functools.partial``, cheaper to make than a closure): ``call(session, m, data) ->
    (output data, in place?)`` on a shape tensor where ``applies(m, data)`` (None: always),
    the layer's own ``forward`` otherwise. (No local named ``self``: an error names the
    module that called the layer, see :meth:`_Session.module_label`.)"""
    if len(args) == 1 and not kwargs and type(args[0]) is _SHAPE_TENSOR:
        x = args[0]
        if applies is None or applies(m, x._d):
            out, inplace = call(session, m, x._d)
            return session.result(out, inplace, x)
    return type(m).forward(m, *args, **kwargs)  # the layer's own


def _fast_forwards(torch: Any) -> dict:
    """``{layer class: (attributes its forward reads, spec)}`` for the common torch layers.

    For a layer, ``spec`` is ``(check, call, applies, tensor attributes)``: ``check(m)``
    (None: always true) says whether a layer of that class can skip its ``forward``;
    ``call(session, m, data)`` hands the session the very call the layer's own ``forward``
    makes (same function, same arguments) without the Python of ``forward`` and
    ``torch.nn.functional`` in between, where ``applies(m, data)`` (None: always); the
    attributes must be found in the module's dicts (else, for that class, the layer's own
    ``forward`` runs). For ``nn.Sequential``, ``spec`` is ``factory(session, m)``, which gives
    the container's ``forward``. Everything here is per class: a pass only binds a layer to
    its ``call`` (:func:`_layer_forward`)."""
    nn, F = torch.nn, torch.nn.functional

    # Each call hands session.raw the handler that session.dispatch would pick for the
    # layer's call, with the arguments dispatch would hand it (the layer's tensors and numbers
    # need no unwrapping; an in-place flag is what dispatch reads from ``inplace=``).
    # Parameters and buffers are read from the module's own dicts, where ``m.weight`` finds
    # them (through Module.__getattr__, which costs more), at call time as ``forward`` does.
    def conv_check(m):
        return m.padding_mode == "zeros"

    # (conv and batch norm, never in place, call the handler as session.raw would, without
    # its in-place flag: the builder's no_cse is False outside raw)
    def conv(session, m, d):
        p = m._parameters
        w, bias = p["weight"], p["bias"]
        try:
            return session.ops.conv(d, w, bias, m.stride, m.padding, m.dilation,
                                    m.groups), False
        except TorchFrontEndError:
            raise
        except Exception as exc:
            raise session.failure(torch.conv2d, exc)

    def batch_norm_2d(session, m, d):
        p, b = m._parameters, m._buffers
        mean, var = b["running_mean"], b["running_var"]
        w, bias = p["weight"], p["bias"]
        bn_training = mean is None and var is None
        momentum = 0.0 if m.momentum is None else m.momentum
        try:
            return session.ops.batch_norm(d, mean, var, w, bias, bn_training, momentum,
                                          m.eps, m.num_features), False
        except TorchFrontEndError:
            raise
        except Exception as exc:
            raise session.failure(F.batch_norm, exc)

    def batch_norm_applies(m, d):
        # otherwise the layer's own error (not 4-D) or training mode
        return len(d.shape) == 4 and not m.training

    def relu(session, m, d):
        inplace = m.inplace is True
        return session.raw(F.relu, session.ops.unary, "Relu", d, None, inplace), inplace

    def hardtanh(session, m, d):
        inplace = m.inplace is True
        return session.raw(F.hardtanh, session.ops.clip, d, m.min_val, m.max_val,
                           inplace), inplace

    def hardswish(session, m, d):
        inplace = m.inplace is True
        return session.raw(F.hardswish, session.ops.hardswish, d, inplace), inplace

    def linear(session, m, d):
        p = m._parameters
        return session.raw(F.linear, session.ops.linear, d, p["weight"], p["bias"],
                           False), False

    from torch.nn.modules import module as module_py

    plain_call: dict = {}

    def calls_plainly(cls: type) -> bool:
        # instances of cls are called as Module.__call__ calls them (no override on the way)
        ok = plain_call.get(cls)
        if ok is None:
            M = nn.Module
            ok = plain_call[cls] = all(getattr(cls, a) is getattr(M, a) for a in (
                "__call__", "_wrapped_call_impl", "_call_impl"))
        return ok

    def hooked_globally() -> bool:
        # what Module.__call__ checks besides the module's own hooks
        return bool(module_py._global_forward_hooks or module_py._global_forward_pre_hooks or
                    module_py._global_backward_hooks or module_py._global_backward_pre_hooks or
                    torch._C._get_tracing_state())

    def sequential(session, m):
        """``nn.Sequential.forward`` (each child called on the last one's output) where the
        children the session patched (layers, and containers like this one) run at the data
        level, as ``Module.__call__`` would run them (no hooks, not compiled, not traced): the
        shape tensors between two of them are never made, only what leaves them or reaches
        another child."""
        data_calls, st = session.data_calls, _SHAPE_TENSOR

        def forward(x: Any, d: Any) -> tuple:  # (named forward for module_label, as below)
            """The children run from ``x`` (a shape tensor) or ``d`` (the current data when
            it has no shape tensor, else None); returns ``(x, d, False)`` likewise, or
            ``(what the container returns, None, True)`` once a child returns something other
            than a shape tensor (the rest of the children then run as usual)."""
            self = m  # noqa: F841 (the module the error messages name: see module_label)
            children = iter(m._modules.values())
            for child in children:
                entry = data_calls.get(id(child))
                # what Module.__call__ checks before it calls forward directly
                if entry is not None and entry[3] and \
                        child.__dict__.get("forward") is entry[0] and \
                        not (child._backward_hooks or child._backward_pre_hooks or
                             child._forward_hooks or child._forward_pre_hooks) and \
                        child._compiled_call_impl is None:
                    if entry[4] is not None:  # a container run the same way
                        if not hooked_globally():
                            x, d, done = entry[4](x, d)
                            if done:
                                for rest in children:
                                    x = rest(x)
                                return x, None, True
                            continue
                    else:
                        cur = x._d if d is None else d
                        if entry[2] is None or entry[2](child, cur):
                            out, inplace = entry[1](session, child, cur)
                            if inplace and d is None:
                                x._d = out  # the layer updates the tensor it was given
                            else:
                                d = out
                            continue
                if d is not None:
                    x, d = st(d, session), None
                x = child(x)
                if type(x) is not st:  # the rest as Sequential.forward runs it
                    for rest in children:
                        x = rest(x)
                    return x, None, True
            return x, d, False

        chain = forward

        def forward(*args: Any, **kwargs: Any) -> Any:  # noqa: F811
            self = m  # noqa: F841 (the module the error messages name: see module_label)
            if len(args) != 1 or kwargs or type(args[0]) is not st or hooked_globally():
                return type(m).forward(m, *args, **kwargs)
            x, d, done = chain(args[0], None)
            return x if done or d is None else st(d, session)
        session.data_calls[id(m)] = (forward, None, None, calls_plainly(type(m)), chain)
        return forward

    w, wb = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var")
    return {nn.Conv2d: (("forward", "_conv_forward"), (conv_check, conv, None, w)),
            nn.BatchNorm2d: (("forward", "_check_input_dim"),
                             (None, batch_norm_2d, batch_norm_applies, wb)),
            nn.ReLU: (("forward",), (None, relu, None, ())),
            nn.Hardtanh: (("forward",), (None, hardtanh, None, ())),
            nn.Hardswish: (("forward",), (None, hardswish, None, ())),
            nn.Linear: (("forward",), (None, linear, None, w)),
            nn.Sequential: (("forward", "__iter__"), sequential)}


_FAST: dict = {}
_FAST_OF_CLASS: dict = {}  # layer class -> its resolved spec or None (memo of _fast_spec)


def _fast_spec(cls: type) -> tuple | None:
    """How a pass patches modules of class ``cls``: None (not at all), ``(check, call,
    applies, plain)`` for a layer (see :func:`_fast_forwards`; ``plain``: instances are called
    as ``Module.__call__`` calls them), or ``(factory,)`` for a container. That of the torch
    layer ``cls`` derives from, if it overrides none of the methods that layer's ``forward``
    runs and the tensors it reads are found in the module's dicts (a class attribute, a
    property say, of that name would take precedence over them)."""
    try:
        return _FAST_OF_CLASS[cls]
    except KeyError:
        pass
    import torch

    found = None
    for base, (attrs, spec) in _FAST.items():
        if issubclass(cls, base) and all(getattr(cls, a) is getattr(base, a) for a in attrs):
            if callable(spec):
                found = (spec,)
            elif not any(hasattr(cls, n) for n in spec[3]):
                M = torch.nn.Module
                plain = all(getattr(cls, a) is getattr(M, a) for a in (
                    "__call__", "_wrapped_call_impl", "_call_impl"))
                found = (spec[0], spec[1], spec[2], plain)
            break
    _FAST_OF_CLASS[cls] = found
    return found


def _prepare(session: Any, module: Any) -> tuple[list, list]:
    """Set ``module`` and its submodules to eval mode as the exporter does (directly:
    ``Module.eval()`` costs ~1 ms per 100 modules) and give the common layers and containers
    a ``forward`` that skips their Python (an instance attribute); returns ``(modules whose
    mode was changed, modules patched)`` for :func:`_restore`. Per module, only dictionary
    reads and writes, and for a patched layer one ``functools.partial``."""
    training, patched = [], []
    fast_of, data_calls, layer_forward = _FAST_OF_CLASS, session.data_calls, _layer_forward
    # module and its submodules, each once, in module.modules()'s order (walked here without
    # its generators)
    seen: set = set()
    stack = [module]
    pop, push = stack.pop, stack.extend
    while stack:
        m = pop()
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        d = m.__dict__
        children = d.get("_modules")
        if children:
            push(reversed(children.values()))
        if m.training:
            d["training"] = False
            training.append(m)
        cls = type(m)
        spec = fast_of[cls] if cls in fast_of else _fast_spec(cls)
        if spec is None or "forward" in d:
            continue
        if len(spec) == 1:  # a container
            forward = spec[0](session, m)
        else:
            check, call, applies, plain = spec
            if check is not None and not check(m):
                continue
            forward = partial(layer_forward, session, m, call, applies)
            data_calls[id(m)] = (forward, call, applies, plain, None)
        d["forward"] = forward
        patched.append(m)
    return training, patched


def _restore(session: Any, training: list, patched: list) -> None:
    """Undo :func:`_prepare`."""
    for m in training:
        m.__dict__["training"] = True
    for m in patched:
        m.__dict__.pop("forward", None)
    session.data_calls.clear()  # (its forwards refer to the session: no cycle left)


def traced_shape(tensor: Any) -> tuple[int, ...]:
    """Shape (NCHW) of ``tensor``, a real tensor or an activation of a running
    :func:`torch_to_graph` pass (as a forward hook receives it), read without recording a
    shape query. ``tensor.shape`` on an activation is recorded, as the exporter records
    ``aten::size``: a convolution whose output shape is read keeps its batch norm unfused."""
    if _SHAPE_TENSOR is not None and type(tensor) is _SHAPE_TENSOR:
        return tensor._d.shape
    return tuple(int(d) for d in tensor.shape)


def _setup(torch: Any) -> None:
    global _TABLE, _INPLACE, _SHAPE_TENSOR, _INPLACE_POS
    if _TABLE is None:
        _SHAPE_TENSOR = _make_shape_tensor_class(torch)
        _INPLACE_POS = _inplace_positions(torch)
        _FAST.update(_fast_forwards(torch))
        _TABLE, _INPLACE = _build_table(torch)


def _collect_outputs(v: Any, outputs: list) -> None:
    """Append the activations in ``v`` (nested lists, tuples, dicts) to ``outputs`` (a module
    function, not a closure: a recursive closure is a reference cycle, left for the garbage
    collector)."""
    if isinstance(v, _SHAPE_TENSOR):  # type: ignore[arg-type]
        outputs.append(v._d)
    elif isinstance(v, (list, tuple)):
        for a in v:
            _collect_outputs(a, outputs)
    elif isinstance(v, dict):
        for a in v.values():
            _collect_outputs(a, outputs)


def torch_to_graph(module: Any, input_shape: Sequence[int] | Sequence[Sequence[int]], *,
                   name: str | None = None) -> OpGraph:
    """Shaped graph of ``module`` (run in eval mode) for inputs of ``input_shape`` (NCHW, or a
    list of shapes for several inputs), equal to what the ONNX export path gives.

    Parameters
    ----------
    module : torch.nn.Module
        The network. Its mode is restored afterwards; its weights are not read.
    input_shape : sequence of int, or sequence of sequences of int
        Input tensor shape(s), NCHW.
    name : str, default=None
        Name of the graph (default: the module's class name).

    Raises
    ------
    TorchFrontEndError
        An op or layer this front end does not map (named in the message, with the submodule
        that called it); export the module to ONNX instead (``load_graph`` does so).
    """
    import torch

    from .torch_export import _normalise_shapes

    shapes = _normalise_shapes(input_shape)
    _setup(torch)
    label = name or type(module).__name__
    session = _Session(torch, module)
    training, patched = _prepare(session, module)
    try:
        inputs = [session.wrap(_Data(s, None)) for s in shapes]
        with torch.no_grad():
            out = module(*inputs)
    except TorchFrontEndError:
        raise
    except Exception as exc:  # the forward pass needs real data or something unmapped
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = session.module_label(tb.tb_frame if tb is not None else None)
        raise TorchFrontEndError(
            f"the torch front end cannot run {label} without data (in module {where}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            module=where) from exc
    finally:
        _restore(session, training, patched)
    outputs: list[_Data] = []
    _collect_outputs(out, outputs)
    if not outputs:
        raise TorchFrontEndError(f"{label} returns no tensor computed from its input",
                                 module=label)
    return session.builder.finish(outputs, label)
