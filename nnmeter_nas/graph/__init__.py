"""Front ends: torch modules, ONNX models and nn-Meter IR in, a shaped :class:`OpGraph` out."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import LatencyWarning, ModelFormatError, TorchFallbackWarning
from ..warn import warn
from .ir import OpGraph, OpNode

__all__ = ["OpGraph", "OpNode", "load_graph", "is_torch_module", "TorchFallbackWarning"]

TORCH_FRONTENDS = ("auto", "trace", "onnx")


def is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def load_graph(model: Any, *, input_shape: Sequence[int] | dict | None = None,
               torch_frontend: str = "auto") -> OpGraph:
    """Shaped operator graph of ``model``.

    ``model`` may be a ``torch.nn.Module`` (``input_shape`` required, NCHW), an ONNX file path,
    ``onnx.ModelProto`` or bytes (``input_shape`` overrides dynamic input dims), an nn-Meter IR
    dict or ``.json`` file, or an :class:`OpGraph` (returned as is).

    Every front end's graph passes :func:`~nnmeter_nas.graph.validate.validate_graph`, and a
    torch model's ``input_shape`` is capped (:data:`~nnmeter_nas.graph.validate.
    MAX_INPUT_ELEMENTS`) before any tensor is allocated.

    ``torch_frontend`` says how a torch module is read: ``"auto"`` (default) runs the
    shape-only forward pass of :mod:`~nnmeter_nas.graph.torch_frontend` (much faster than
    exporting; see ``benchmarks/results/torch_frontend.txt``) and falls back to the ONNX export, with a :class:`TorchFallbackWarning` naming
    the submodule at fault, for what it cannot map; ``"trace"`` raises
    :class:`~nnmeter_nas.errors.TorchFrontEndError` instead; ``"onnx"`` always exports. Both
    give the same graph wherever the front end applies. A module that torch itself cannot run
    on that input gets no graph: the front end refuses the call (its arguments are checked as
    torch checks them), and the export then fails with torch's message
    (:class:`~nnmeter_nas.errors.ExportError`, followed by the front end's, which names the
    submodule).
    """
    if isinstance(model, OpGraph):
        return model
    from .validate import check_input_size, validate_graph

    if is_torch_module(model):
        check_input_size(input_shape, type(model).__name__)
    return validate_graph(_front_end(model, input_shape=input_shape,
                                      torch_frontend=torch_frontend))


def _front_end(model: Any, *, input_shape: Sequence[int] | dict | None,
               torch_frontend: str) -> OpGraph:
    """The graph of ``model`` from the front end its kind needs (see :func:`load_graph`)."""
    if is_torch_module(model):
        return _torch_graph(model, input_shape, torch_frontend)
    is_ir_file = isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".json"
    if isinstance(model, dict) or is_ir_file:
        from .ir_import import ir_to_graph

        if input_shape is not None:
            shown = input_shape if isinstance(input_shape, dict) else tuple(input_shape)
            where = f"the nn-Meter IR file {model}" if is_ir_file else "an nn-Meter IR dict"
            warn(f"input_shape={shown} is ignored for {where}: the IR records the shape of "
                 "every node (leave input_shape out, or convert the network at the shape you "
                 "want)", LatencyWarning)
        return ir_to_graph(model)
    if isinstance(model, (str, Path, bytes, bytearray)) or type(model).__name__ == "ModelProto":
        from .onnx_import import onnx_to_graph

        return onnx_to_graph(model, input_shape=input_shape)
    raise ModelFormatError(
        f"cannot predict a {type(model).__name__}: pass a torch.nn.Module (with input_shape), "
        "an ONNX file path or onnx.ModelProto, or an nn-Meter IR dict/JSON file")


def _torch_graph(model: Any, input_shape: Any, frontend: str) -> OpGraph:
    if frontend not in TORCH_FRONTENDS:
        raise ValueError(f"torch_frontend must be one of {TORCH_FRONTENDS}, got {frontend!r}")
    front_end_error = None
    if frontend != "onnx":
        from ..errors import TorchFrontEndError
        from .torch_frontend import torch_to_graph

        try:
            return torch_to_graph(model, input_shape)
        except TorchFrontEndError as exc:
            if frontend == "trace":
                raise
            warn(f"{type(model).__name__}: {exc}; exporting it to ONNX instead "
                 "(slower)", TorchFallbackWarning)
            front_end_error = exc
    from ..errors import ExportError
    from .onnx_import import onnx_to_graph
    from .torch_export import export_onnx

    try:
        exported = export_onnx(model, input_shape)
    except ExportError as exc:
        if front_end_error is None:
            raise
        # torch's own message rarely names the submodule; the front end's does (a call torch
        # refuses fails both ways)
        raise ExportError(f"{exc} (the torch front end, tried first, stopped in module "
                          f"{front_end_error.module}: {front_end_error})") from exc
    graph = onnx_to_graph(exported)
    graph.name = type(model).__name__
    return graph
