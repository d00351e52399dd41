"""Kernel -> (regressor name, feature vector) in nn-Meter's order and units.

Two feature sets:

``"nnmeter-2.0"``
    Exactly what nn-Meter 2.0 computes, so its trained regressors give the same answer. It
    keeps nn-Meter's quirks: global average pooling always gets ``hw = 1``; a concat of more
    than four inputs reports 6 inputs; grouped (non-depthwise) convolutions are costed as dense
    ones; 2-D tensors give ``hw = batch`` for bn/relu.
``"nnmeter-nas-1"``
    The same vectors with those quirks fixed (real ``hw``, real input count, grouped FLOPs;
    ``hw`` of a non-square ``H x W`` map is ``sqrt(H * W)``, where nn-Meter takes ``H`` and so
    prices a 160x320 input as 160x160), plus generic ``[hw, cin]`` features for kernel types nn-Meter has no regressor for (mul,
    sigmoid, pad, ...). The packages fitted to NAS-Bench-201 latencies use it.
``"nnmeter-nas-2"``
    ``nnmeter-nas-1`` with more for convolutions and pooling, for packages the builder
    measures: input and output elements (/1e6: memory traffic, which a tree cannot form
    from ``hw`` and ``cin`` alone), ``cin % 16`` and ``cout % 16`` (CPU kernels use blocked
    layouts of 8 channels with AVX2 and 16 with AVX-512; other counts take slower paths), and
    for convolutions the group count, the fused activation (0 none, 1 relu or relu6, 2
    hswish, 3 other) and the number of fused adds. Rows: conv ``[...nnmeter-nas-1 (7), in_e6,
    out_e6, cin_mod16, cout_mod16, groups, act, n_add]``, pooling ``[...nnmeter-nas-1 (5),
    in_e6, out_e6, cin_mod16]``.
``"nnmeter-nas-3"``
    ``nnmeter-nas-2`` with ReLU6 (an ONNX ``Clip``) told apart from ReLU: ``act`` is 4 for a
    convolution whose activation is a ReLU6. onnxruntime's CPU convolutions fuse a ReLU but run
    a ReLU6 as an extra pass over the output (``benchmarks/relu6_cost.py``), so networks built
    of ReLU6 layers (MobileNetV2, ProxylessNAS) need it. Same names and row lengths as
    ``nnmeter-nas-2``.

Conv features: ``[hw, cin, cout, k, s, flops/2e6, params/1e6]`` with
``params = cout * (k*k*cin + 1)`` and ``flops = 2 * (H/s) * (W/s) * params``.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..kernels.detector import Kernel

FEATURE_SETS = ("nnmeter-2.0", "nnmeter-nas-1", "nnmeter-nas-2", "nnmeter-nas-3")

FEATURE_NAMES: dict[str, list[str]] = {
    "conv-bn-relu": ["hw", "cin", "cout", "k", "s", "flops_2e6", "params_1e6"],
    "dwconv-bn-relu": ["hw", "cin", "cout", "k", "s", "flops_2e6", "params_1e6"],
    "fc": ["cin", "cout", "flops_2e6", "flops_1e6"],
    "maxpool": ["hw", "cin", "cout", "k", "s"],
    "avgpool": ["hw", "cin", "cout", "k", "s"],
    "global-avgpool": ["hw", "cin"],
    "channelshuffle": ["hw", "cin"],
    "split": ["hw", "cin"],
    "se": ["hw", "cin"],
    "hswish": ["hw", "cin"],
    "bn": ["hw", "cin"],
    "relu": ["hw", "cin"],
    "bnrelu": ["hw", "cin"],
    "add": ["hw", "cin1", "cin2"],
    "addrelu": ["hw", "cin1", "cin2"],
    "concat": ["hw", "n_inputs", "c1", "c2", "c3", "c4"],
}
GENERIC_FEATURE_NAMES = ["hw", "cin"]
# Appended to the nnmeter-nas-1 rows by nnmeter-nas-2.
EXTRA_FEATURE_NAMES_V2: dict[str, list[str]] = {
    "conv-bn-relu": ["in_e6", "out_e6", "cin_mod16", "cout_mod16", "groups", "act", "n_add"],
    "dwconv-bn-relu": ["in_e6", "out_e6", "cin_mod16", "cout_mod16", "groups", "act", "n_add"],
    "maxpool": ["in_e6", "out_e6", "cin_mod16"],
    "avgpool": ["in_e6", "out_e6", "cin_mod16"],
}


def regressor_name(kernel_type: str) -> str:
    """Name of the regressor that predicts a kernel type (nn-Meter's merging of similar
    kernels: every convolution kernel uses ``conv-bn-relu`` or ``dwconv-bn-relu``...)."""
    t = kernel_type
    if "dwconv" in t:
        return "dwconv-bn-relu"
    if "conv" in t:
        return "conv-bn-relu"
    return {"fc-relu": "fc", "max-pool": "maxpool", "avg-pool": "avgpool",
            "global-pool": "global-avgpool", "gap": "global-avgpool",
            "channel_shuffle": "channelshuffle", "bn-relu": "bnrelu", "add-relu": "addrelu",
            "SE": "se", "SE-relu": "se", "se-relu": "se"}.get(t, t)


def feature_names(regressor: str, feature_set: str = "nnmeter-nas-1") -> list[str]:
    """Names of the features of ``regressor`` in ``feature_set``, in row order."""
    names = list(FEATURE_NAMES.get(regressor, GENERIC_FEATURE_NAMES))
    if feature_set in ("nnmeter-nas-2", "nnmeter-nas-3"):
        names += EXTRA_FEATURE_NAMES_V2.get(regressor, [])
    return names


def weight_count(regressor: str, features: Sequence[float] | None,
                 feature_set: str = "nnmeter-nas-1") -> float:
    """Number of weights (parameters, biases included) a kernel reads, from its feature row:
    ``params/1e6`` of convolutions, ``cin * cout + cout`` of a fully connected layer, 0 for
    kernels without weights (pooling, elementwise, memory) and unknown rows. Multiply by 4
    for the bytes of float32 weights."""
    if features is None:
        return 0.0
    names = feature_names(regressor, feature_set)
    if "params_1e6" in names:
        return float(features[names.index("params_1e6")]) * 1e6
    if regressor == "fc" and names[:2] == ["cin", "cout"]:
        return float(features[0]) * float(features[1]) + float(features[1])
    return 0.0


def _activation_code(kernel_type: str, relu6: bool = False) -> int:
    """0 no fused activation, 1 relu (and relu6 unless ``relu6``), 2 hswish, 3 any other, 4
    relu6 when ``relu6`` (nnmeter-nas-3)."""
    last = kernel_type.split("-")[-1]
    if last in ("conv", "dwconv", "add", "bn"):
        return 0
    if last == "relu6" or (last == "relu" and relu6):
        return 4 if relu6 else 1
    if last == "relu":
        return 1
    if last == "hswish":
        return 2
    return 3


def _conv_flops_params(kind: str, hw: float, cin: int, cout: int, k: int, s: int,
                       groups: int = 1) -> tuple[float, float]:
    if "dwconv" in kind:
        params = cout * (k * k + 1)
    else:
        params = cout * (k * k * cin / groups + 1)
    return 2 * hw / s * hw / s * params, params


def _squared(shapes: list) -> list:
    """``shapes`` with each non-square NHWC map given as the square of the same area (side
    ``sqrt(H * W)``), so that features, which hold one side ``hw`` for a map of ``hw * hw``
    pixels, count every pixel of a non-square input instead of ``H * H`` of them (nn-Meter's
    ``hw`` is the height; the fixed feature sets use the area's side, the same for square
    maps). The list itself where every map is square."""
    for shape in shapes:
        if len(shape) == 4 and shape[1] != shape[2]:
            break
    else:
        return shapes
    return [[s[0], math.sqrt(s[1] * s[2]), math.sqrt(s[1] * s[2]), s[3]]
            if len(s) == 4 and s[1] != s[2] else s for s in shapes]


def _hw_c(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) == 4:
        return shape[1], shape[3]
    return shape[0], shape[-1]


def extract_features(kernel: Kernel, feature_set: str = "nnmeter-nas-1") -> list[float] | None:
    """Feature vector of ``kernel``, or None when the feature set defines none for its type
    (nn-Meter then has no regressor for it either)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; use one of {FEATURE_SETS}")
    if feature_set in ("nnmeter-nas-2", "nnmeter-nas-3"):
        base = _features_v1(kernel, "nnmeter-nas-1")
        return None if base is None else \
            base + _extra_v2(kernel, base, relu6=feature_set == "nnmeter-nas-3")
    return _features_v1(kernel, feature_set)


def _out_hw(kernel: Kernel, default: float) -> float:
    outs = _squared(kernel.output_shapes)
    return outs[0][1] if outs and len(outs[0]) == 4 else default


def _extra_v2(kernel: Kernel, base: list[float], *, relu6: bool = False) -> list[float]:
    op = kernel.type
    is_conv = "conv" in op
    if not is_conv and not ("pool" in op and "global" not in op):
        return []
    hw, cin, cout, _, s = base[:5]
    out_hw = _out_hw(kernel, hw / s)
    extra = [hw * hw * cin / 1e6, out_hw * out_hw * cout / 1e6, cin % 16]
    if is_conv:
        act = _activation_code(op, relu6=relu6 and bool(kernel.attrs.get("relu6")))
        extra += [cout % 16, int(kernel.attrs.get("group", 1)), act,
                  op.split("-").count("add")]
    return extra


def _ks(attrs: dict) -> int:
    """The kernel size features use (the last of ``ks``; 1 when absent)."""
    k = attrs.get("ks", _ONES)
    return int(k[1] if len(k) > 1 else k[0])


def _stride(attrs: dict) -> int:
    """The stride features use (the last of ``strides``; 1 when absent)."""
    s = attrs.get("strides", _ONES)
    return int(s[1] if len(s) > 1 else s[0])


_ONES = (1, 1)


def _features_v1(kernel: Kernel, feature_set: str) -> list[float] | None:
    compat = feature_set == "nnmeter-2.0"
    op = kernel.type
    ins = kernel.input_shapes if compat else _squared(kernel.input_shapes)
    outs = kernel.output_shapes if compat else _squared(kernel.output_shapes)
    attrs = kernel.attrs
    first = ins[0] if ins else []
    inputh = first[1] if len(first) == 4 else None
    cin = first[-1] if first else None
    cout = outs[0][-1] if len(outs) == 1 and outs[0] else None

    # The order of these tests follows nn-Meter's, which matches by substring.
    if "conv" in op:
        if inputh is None or cout is None:
            return None
        groups = 1 if compat else int(attrs.get("group", 1))
        k, s = _ks(attrs), _stride(attrs)
        flops, params = _conv_flops_params(op, inputh, cin, cout, k, s, groups)
        return [inputh, cin, cout, k, s, flops / 2e6, params / 1e6]
    if "fc" in op:
        if cin is None or cout is None:
            return None
        flop = (2 * cin + 1) * cout
        return [cin, cout, flop / 2e6, flop / 1e6]
    if "pool" in op and "global" not in op:
        if inputh is None or cout is None:
            return None
        return [inputh, cin, cout, _ks(attrs), _stride(attrs)]
    if "global-pool" in op or "global-avgpool" in op or "gap" in op:
        return [1 if compat else (inputh or 1), cin]
    if "channelshuffle" in op or "split" in op:
        if len(first) != 4:
            return None if compat else [1, cin]
        return [first[1], first[3]]
    if "se" in op or "SE" in op:
        last = ins[-1]
        return [last[-2], last[-1]]
    if "concat" in op:
        hw = first[1] if len(first) == 4 else (first[0] if compat else 1)
        feats = [hw, len(ins)] + [t[-1] for t in ins]
        if len(feats) < 6:
            feats += [0] * (6 - len(feats))
        elif len(feats) > 6:
            feats = feats[:6]
            if compat:
                feats[1] = 6
        return feats
    if op == "hswish":
        if compat and "inputh" in attrs:
            return [attrs["inputh"], cin]
        h = first[1] if len(first) == 4 else (first[0] if len(first) == 2 else 1)
        return [h, cin]
    if op in ("bn", "relu", "bn-relu"):
        if len(first) == 4:
            return [first[1], first[3]]
        if compat:
            return [first[0], first[1]]
        return [1, first[-1]]
    if op in ("add-relu", "add"):
        if compat:
            if len(ins) < 2 or len(ins[0]) != 4 or len(ins[1]) != 4:
                return None  # nn-Meter 2.0 raises an IndexError here
            return [ins[0][1], ins[0][3], ins[1][3]]
        h, c1 = _hw_c(first) if len(first) == 4 else (1, first[-1])
        c2 = ins[1][-1] if len(ins) > 1 else c1
        return [h, c1, c2]
    if compat:
        return None
    if not first:
        return None
    h, c = _hw_c(first) if len(first) == 4 else (1, first[-1])
    return [h, c]
