"""Building blocks shared by the zoo networks (plain ``torch.nn``, no torchvision).

All tensors are NCHW. Blocks are written so that ``torch.onnx.export`` (TorchScript exporter)
turns them into the ONNX ops nn-Meter-style kernel detection expects: Conv, BatchNormalization,
Relu/Clip/HardSwish/HardSigmoid/Sigmoid, Add, Mul, Concat, GlobalAveragePool, Gemm.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

ActFactory = Callable[[], nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing >10%.

    This is the rounding used by the MobileNet/MnasNet family when a width multiplier is applied.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: Optional[ActFactory] = nn.ReLU,
) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd ``kernel``) + BatchNorm2d + optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> act -> 1x1 conv -> gate -> mul.

    ``reduced`` is the number of channels of the bottleneck. The gate is ``nn.Sigmoid`` in
    MnasNet and ``nn.Hardsigmoid`` in MobileNetV3.
    """

    def __init__(
        self,
        channels: int,
        reduced: int,
        act: ActFactory = nn.ReLU,
        gate: ActFactory = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear project.

    The residual add is used when ``stride == 1`` and ``in_ch == out_ch``. ``mid_ch == in_ch``
    drops the expansion conv (as in the first block of MobileNetV2/V3/ProxylessNAS).
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        act: ActFactory = nn.ReLU6,
        se_reduced: int = 0,
        se_gate: ActFactory = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if mid_ch != in_ch:
            layers.append(conv_bn_act(in_ch, mid_ch, 1, act=act))
        layers.append(conv_bn_act(mid_ch, mid_ch, kernel, stride, groups=mid_ch, act=act))
        if se_reduced > 0:
            layers.append(SqueezeExcite(mid_ch, se_reduced, act=nn.ReLU, gate=se_gate))
        layers.append(conv_bn_act(mid_ch, out_ch, 1, act=None))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


def init_weights(model: nn.Module) -> nn.Module:
    """Deterministic (given ``torch.manual_seed``) Kaiming init for convs, N(0, 0.01) for FCs."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model
