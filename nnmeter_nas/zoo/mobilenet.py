"""MobileNetV1 (Howard et al., 2017), V2 (Sandler et al., 2018) and V3 (Howard et al., 2019)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import InvertedResidual, conv_bn_act, init_weights, make_divisible


class MobileNetV1(nn.Module):
    """MobileNetV1: 3x3 stem then 13 depthwise-separable (dw3x3-BN-ReLU, pw1x1-BN-ReLU) layers."""

    # (output channels, stride) of each depthwise-separable layer
    LAYERS = [
        (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
    ]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(3, in_ch, 3, 2)]
        for out, stride in self.LAYERS:
            out_ch = make_divisible(out * width_mult)
            layers.append(
                nn.Sequential(
                    conv_bn_act(in_ch, in_ch, 3, stride, groups=in_ch),
                    conv_bn_act(in_ch, out_ch, 1),
                )
            )
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class MobileNetV2(nn.Module):
    """MobileNetV2: inverted residual blocks with linear bottlenecks and ReLU6."""

    # (expansion t, output channels c, repeats n, first stride s), as in table 2 of the paper
    SETTINGS = [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    ]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_act(3, in_ch, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(in_ch, in_ch * t, out_ch, 3, s if i == 0 else 1, nn.ReLU6)
                )
                in_ch = out_ch
        layers.append(conv_bn_act(in_ch, last_ch, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_ch, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# MobileNetV3 block settings:
# (kernel, expanded channels, output channels, use SE, activation "RE"/"HS", stride)
V3_LARGE = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
V3_SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]


class MobileNetV3(nn.Module):
    """MobileNetV3: inverted residuals with optional SE (hard-sigmoid gate) and h-swish.

    The SE bottleneck has ``make_divisible(expanded / 4)`` channels; the head is
    1x1 conv (6x last block width) -> global pool -> FC -> h-swish -> dropout -> FC.
    """

    def __init__(
        self,
        settings: Sequence[tuple],
        last_fc: int,
        num_classes: int = 1000,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        in_ch = make_divisible(16 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(3, in_ch, 3, 2, act=nn.Hardswish)]
        for k, exp, out, use_se, act_name, stride in settings:
            mid_ch = make_divisible(exp * width_mult)
            out_ch = make_divisible(out * width_mult)
            act = nn.Hardswish if act_name == "HS" else nn.ReLU
            se = make_divisible(mid_ch // 4) if use_se else 0
            layers.append(
                InvertedResidual(in_ch, mid_ch, out_ch, k, stride, act, se, nn.Hardsigmoid)
            )
            in_ch = out_ch
        head_ch = 6 * in_ch
        layers.append(conv_bn_act(in_ch, head_ch, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(head_ch, last_fc), nn.Hardswish(), nn.Dropout(0.2),
            nn.Linear(last_fc, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV1:
    """MobileNetV1 1.0 (4.2M parameters, 569 MMACs at 224x224)."""
    return MobileNetV1(num_classes, width_mult)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 1.0 (3.5M parameters, 300 MMACs at 224x224)."""
    return MobileNetV2(num_classes, width_mult)


def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV3:
    """MobileNetV3-Large 1.0 (5.4M parameters, 219 MMACs at 224x224)."""
    last_fc = make_divisible(1280 * max(1.0, width_mult))
    return MobileNetV3(V3_LARGE, last_fc, num_classes, width_mult)


def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV3:
    """MobileNetV3-Small 1.0 (2.5M parameters, 56 MMACs at 224x224)."""
    last_fc = make_divisible(1024 * max(1.0, width_mult))
    return MobileNetV3(V3_SMALL, last_fc, num_classes, width_mult)
