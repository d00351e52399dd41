"""Export small torch modules to ONNX bytes for measurement and feature extraction."""
from __future__ import annotations

import io
from typing import Sequence

Shape = Sequence[int]


def export_onnx(module, input_shapes: Sequence[Shape], *, opset: int = 13) -> bytes:
    """Serialised ONNX model of ``module`` (eval mode) for fixed NCHW ``input_shapes``.

    Uses the TorchScript exporter (``dynamo=False``): fast and it keeps BatchNormalization as
    a node, which the kernel detection needs.
    """
    import torch

    from ..errors import ExportError

    module = module.eval()
    args = tuple(torch.randn(*s) for s in input_shapes)
    buf = io.BytesIO()
    names = [f"input_{i}" for i in range(len(args))]
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                              input_names=names, do_constant_folding=False)
    except Exception as exc:  # torch raises many types here
        raise ExportError(f"could not export {type(module).__name__} with inputs "
                          f"{[list(s) for s in input_shapes]} to ONNX: {exc}") from exc
    return buf.getvalue()


def tiny_relu_model() -> bytes:
    """A one-node ONNX model (Relu on one float): its latency is a backend's per-call cost."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny_relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()
