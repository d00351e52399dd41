"""Checks every front end's :class:`OpGraph` passes before anything is predicted from it.

A latency predicted from an impossible graph (a negative dim, a convolution on a rank-3
tensor, channels that disagree with the weights) is a wrong answer, not an approximate one, so
these are refused here, once for torch, ONNX and nn-Meter IR alike:

- every dim of every input/output shape is a positive int;
- operators that work on NHWC images get rank-4 inputs (:data:`INPUT_RANKS`, extended with
  :func:`register_input_rank`);
- the attributes the features read (``ks``, ``strides``, ``pads``, ``group``...) hold ints of
  the right sign;
- a convolution's input channels match what its weights take (``in_channels``, recorded by
  the ONNX front end) and a fully connected layer's input features match its weights
  (``in_features``);
- links name nodes that exist (the :class:`OpGraph` constructor checks this).

:func:`check_input_size` caps the input a torch model is traced with, before any tensor is
allocated.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from ..errors import GraphValidationError, InputTooLargeError
from .ir import OpGraph, OpNode

__all__ = ["validate_graph", "check_input_size", "register_input_rank", "INPUT_RANKS",
           "MAX_INPUT_ELEMENTS"]

# Operator type -> ranks its first input may have. Features of these operators read H, W and
# C from an NHWC shape; on another rank they would be built from the wrong dims.
INPUT_RANKS: dict[str, tuple[int, ...]] = {
    "conv": (4,), "dwconv": (4,), "convtranspose": (4,), "maxpool": (4,), "avgpool": (4,),
    "gap": (4,), "gmp": (4,), "depthtospace": (4,), "spacetodepth": (4,),
    "fc": (2, 3, 4),
}

# Attribute -> (smallest allowed value, what it is). Lists are checked element by element.
_INT_ATTRS: dict[str, tuple[int, str]] = {
    "ks": (1, "kernel size"), "strides": (1, "strides"), "dilations": (1, "dilations"),
    "pads": (0, "paddings"), "group": (1, "group count"), "in_channels": (1, "weight channels"),
    "in_features": (1, "weight features"), "split": (0, "split sizes"),
}

# The largest input (elements over all inputs) a torch model is traced with: 2**24 float32
# elements are 64 MiB, e.g. 1x3x2048x2048 or 64x3x224x224. Tracing allocates the input and
# every activation of one forward pass, so a larger input risks exhausting memory.
MAX_INPUT_ELEMENTS = 1 << 24


def register_input_rank(op_type: str, ranks: Iterable[int]) -> None:
    """Declare the ranks the first input of ``op_type`` nodes may have."""
    INPUT_RANKS[op_type] = tuple(int(r) for r in ranks)


def _is_int(v: Any) -> bool:
    # numpy ints count (front ends may hand them over); bools and floats do not.
    return not isinstance(v, bool) and hasattr(v, "__index__")


def _where(node: OpNode) -> str:
    src = f", {node.source_op}" if node.source_op and node.source_op != node.type else ""
    return f"node {node.name!r} ({node.type}{src})"


def _positive_ints(shape: Any) -> bool:
    """Whether ``shape`` is a list of positive Python ints (the common case, checked with a
    plain loop: a generator in ``all`` costs twice as much)."""
    if type(shape) is not list:
        return False
    for d in shape:
        if type(d) is not int or d <= 0:
            return False
    return True


def _check_shape(shape: Any, label: str, node: OpNode, what: str) -> None:
    if _positive_ints(shape):
        return  # the common case, without the per-dim checks below
    if not isinstance(shape, (list, tuple)):
        raise GraphValidationError(f"{label}: {_where(node)} has {what} {shape!r}, which is "
                                   "not a list of dims; write shapes as lists of ints")
    for d in shape:
        if not _is_int(d):
            raise GraphValidationError(
                f"{label}: {_where(node)} has {what} {list(shape)} with the dim {d!r}, which "
                "is not an int; write shapes as lists of ints")
        if d <= 0:
            raise GraphValidationError(
                f"{label}: {_where(node)} has {what} {list(shape)} with the dim {d}; every "
                "dim must be a positive int: fix the model's shapes (or the input_shape "
                "given)")


def _check_attr(key: str, value: Any, label: str, node: OpNode) -> None:
    low, what = _INT_ATTRS[key]
    if type(value) is int:  # the common cases, without _is_int
        if value >= low:
            return
    elif type(value) is list:
        for v in value:
            if type(v) is not int or v < low:
                break
        else:
            return
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if not _is_int(v) or v < low:
            kind = "positive" if low == 1 else "non-negative"
            raise GraphValidationError(
                f"{label}: {_where(node)} has the attribute {key}={value!r}; the {what} must "
                f"be {kind} ints: fix the attribute in the model")


def validate_node(node: OpNode, label: str) -> None:
    """Raise :class:`GraphValidationError` if ``node`` cannot be predicted from."""
    for what, shapes in (("input shape", node.input_shapes),
                         ("output shape", node.output_shapes)):
        if type(shapes) is not list:
            if not isinstance(shapes, list):
                raise GraphValidationError(f"{label}: {_where(node)} has {what}s "
                                           f"{shapes!r}; expected a list of shapes")
        for s in shapes:
            if type(s) is list:  # the common case inline: a list of positive ints
                for d in s:
                    if type(d) is not int or d <= 0:
                        _check_shape(s, label, node, what)
                        break
            else:
                _check_shape(s, label, node, what)
    for key, value in node.attrs.items():
        rule = _INT_ATTRS.get(key)
        if rule is None:
            continue
        # the common cases inline (an int, a list of ints, not below the bound)
        if type(value) is int:
            if value >= rule[0]:
                continue
        elif type(value) is list:
            low = rule[0]
            for v in value:
                if type(v) is not int or v < low:
                    break
            else:
                continue
        _check_attr(key, value, label, node)
    ranks = INPUT_RANKS.get(node.type)
    if ranks and node.input_shapes:
        first = node.input_shapes[0]
        if len(first) not in ranks:
            need = " or ".join(f"{r}-D" for r in ranks)
            layout = " NHWC" if ranks == (4,) else ""
            raise GraphValidationError(
                f"{label}: {_where(node)} needs a {need}{layout} input, got {list(first)} "
                f"(rank {len(first)}); the latency predictors model 2-D image operators "
                "only: fix the node's input_shape or leave the operator out")
    if node.input_shapes and node.input_shapes[0]:
        last = node.input_shapes[0][-1]
        want = node.attrs.get("in_channels") if len(node.input_shapes[0]) == 4 and \
            node.type in ("conv", "dwconv", "convtranspose") else None
        if want is not None and last != want:
            raise GraphValidationError(
                f"{label}: {_where(node)} gets {last} input channels (input shape "
                f"{list(node.input_shapes[0])}, NHWC) but its weights take {want}; the "
                "input shape disagrees with the model")
        want = node.attrs.get("in_features") if node.type == "fc" else None
        if want is not None and last != want:
            raise GraphValidationError(
                f"{label}: {_where(node)} gets {last} input features (input shape "
                f"{list(node.input_shapes[0])}) but its weights take {want}; the input shape "
                "disagrees with the model")


def validate_graph(graph: OpGraph, label: str | None = None) -> OpGraph:
    """Check every node of ``graph`` (see the module docstring); returns ``graph``.

    Parameters
    ----------
    graph : OpGraph
        A graph a front end produced.
    label : str, default=None
        What to name in errors (a file path); default ``graph.name``.
    """
    label = label or graph.name or "<graph>"
    nodes = graph.nodes
    for node in graph:
        validate_node(node, label)
        for links in (node.inputs, node.outputs):
            for other in links:
                if other not in nodes:
                    raise GraphValidationError(f"{label}: {_where(node)} refers to the node "
                                               f"{other!r}, which is not in the graph")
    return graph


def input_elements(input_shape: Any) -> int | None:
    """Elements over all inputs of an ``input_shape`` (one shape, a list of shapes or a
    ``{name: shape}`` dict); None if it is not made of ints (the front end reports that)."""
    if input_shape is None:
        return None
    shapes: Sequence[Any]
    if isinstance(input_shape, dict):
        shapes = list(input_shape.values())
    elif len(input_shape) and isinstance(input_shape[0], (list, tuple)):
        shapes = list(input_shape)
    else:
        shapes = [input_shape]
    total = 0
    for s in shapes:
        if not isinstance(s, (list, tuple)) or not all(_is_int(d) for d in s):
            return None
        total += math.prod(int(d) for d in s)
    return total


def check_input_size(input_shape: Any, label: str = "the model",
                     max_elements: int = MAX_INPUT_ELEMENTS) -> None:
    """Refuse an ``input_shape`` over ``max_elements`` elements before any tensor of it exists.

    Parameters
    ----------
    input_shape : sequence of int, list of them, or dict
        NCHW shape(s) a torch model is to be traced with.
    label : str, default="the model"
        What to name in the error.
    max_elements : int, default=MAX_INPUT_ELEMENTS
        Cap on the elements of all inputs together (float32: 4 bytes each).
    """
    n = input_elements(input_shape)
    if n is not None and n > max_elements:
        raise InputTooLargeError(
            f"{label}: input_shape {input_shape} holds {n:.3g} elements ({n * 4 / 2**30:.3g} "
            f"GiB as float32), over the {max_elements:.3g} elements ({max_elements * 4 / 2**20:.0f}"
            " MiB) a torch model is traced with; tracing would allocate it and every activation "
            "of one forward pass. Predict at the batch and resolution you deploy (the "
            "predictors are fitted at batch 1), or export the model to ONNX yourself and "
            "predict the file (no tensor is allocated for an ONNX file)")
