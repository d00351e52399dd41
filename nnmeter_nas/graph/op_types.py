"""Operator vocabulary: source operator names -> nn-Meter's canonical lower-case types.

The canonical names are the ones nn-Meter's kernel detector and fusion rules use (``conv``,
``dwconv``, ``bn``, ``relu``, ``add``, ...), so ``fusion_rules.json`` files written for nn-Meter
apply unchanged.
"""
from __future__ import annotations

# ONNX op_type -> canonical type. Ops listed here are understood by the engine; anything else
# raises UnsupportedOpError naming the op and the node.
ONNX_OP_TYPES: dict[str, str] = {
    "Conv": "conv",  # becomes "dwconv" when group == input channels
    "ConvTranspose": "convtranspose",
    "BatchNormalization": "bn",
    "InstanceNormalization": "instancenorm",
    "LayerNormalization": "layernorm",
    "Relu": "relu",
    "Clip": "relu",  # ReLU6 in exported graphs (nn-Meter treats it as relu)
    "LeakyRelu": "leakyrelu",
    "PRelu": "prelu",
    "Elu": "elu",
    "Selu": "selu",
    "Gelu": "gelu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hardsigmoid",
    "HardSwish": "hswish",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "LogSoftmax": "softmax",
    "Softplus": "softplus",
    "Mish": "mish",
    "Add": "add",
    "Sum": "add",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "div",
    "Pow": "pow",
    "Sqrt": "sqrt",
    "Exp": "exp",
    "Erf": "erf",
    "Neg": "neg",
    "Abs": "abs",
    "Max": "max",
    "Min": "min",
    "Gemm": "fc",
    "MatMul": "matmul",  # becomes "fc" with a constant 2-D weight
    "GlobalAveragePool": "gap",
    "GlobalMaxPool": "gmp",
    "ReduceMean": "reducemean",  # becomes "gap" when it averages H and W
    "ReduceMax": "reducemax",
    "ReduceSum": "reducesum",
    "MaxPool": "maxpool",
    "AveragePool": "avgpool",
    "Concat": "concat",
    "Split": "split",
    "Slice": "split",
    "Reshape": "reshape",
    "Flatten": "reshape",
    "Squeeze": "reshape",
    "Unsqueeze": "reshape",
    "Transpose": "transpose",
    "Pad": "pad",
    "Resize": "resize",
    "Upsample": "resize",
    "DepthToSpace": "depthtospace",
    "SpaceToDepth": "spacetodepth",
    "Expand": "expand",
    "Tile": "tile",
    "Gather": "gather",
    "Cast": "cast",
}

# Ops that are removed from the graph (their consumers read their input directly).
ONNX_PASSTHROUGH = frozenset({"Identity", "Dropout"})

# nn-Meter IR / TensorFlow names seen in IR files -> canonical type.
IR_ALIASES: dict[str, str] = {
    "Relu6": "relu", "Relu": "relu", "ReLU": "relu", "Add": "add", "Biasadd": "add",
    "BiasAdd": "add", "AddV2": "add", "Conv2D": "conv", "Reshape": "reshape",
    "FusedBatchNorm": "bn", "FusedBatchNormV3": "bn", "MatMul": "fc", "MaxPool": "maxpool",
    "AvgPool": "avgpool", "Mean": "gap", "Mul": "mul", "DepthwiseConv2dNative": "dwconv",
    "ConcatV2": "concat", "Split": "split", "Sigmoid": "sigmoid", "Transpose": "transpose",
    "Pad": "pad", "Pack": "pack", "StridedSlice": "stridedslice",
}
# IR types that carry no computation (nn-Meter's "dummy" types).
IR_DUMMY_TYPES = frozenset({"Const", "Identity", "Placeholder"})

for _onnx, _canon in ONNX_OP_TYPES.items():
    IR_ALIASES.setdefault(_onnx, _canon)


def canonical_ir_type(t: str) -> str:
    """Canonical type of an nn-Meter IR node type (already canonical names pass through)."""
    return IR_ALIASES.get(t, t)
