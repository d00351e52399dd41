"""ProxylessNAS-Mobile-like network (Cai et al., 2019): MBConv blocks with mixed 3/5/7 kernels.

The block list follows the published searched "mobile" architecture (paper figure 4);
skipped (zero) layers of the supernet are simply absent.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import InvertedResidual, conv_bn_act, init_weights, make_divisible

# (expansion, kernel, output channels, stride) for every MBConv block after the first one
MOBILE_BLOCKS = [
    (3, 5, 24, 2), (3, 3, 24, 1),
    (3, 7, 40, 2), (3, 3, 40, 1), (3, 5, 40, 1), (3, 5, 40, 1),
    (6, 7, 80, 2), (3, 5, 80, 1), (3, 5, 80, 1), (3, 5, 80, 1),
    (6, 5, 96, 1), (3, 5, 96, 1), (3, 5, 96, 1), (3, 5, 96, 1),
    (6, 7, 192, 2), (6, 7, 192, 1), (3, 7, 192, 1), (3, 7, 192, 1),
    (6, 7, 320, 1),
]


class ProxylessNAS(nn.Module):
    """3x3/2 stem (32), MBConv-e1 3x3 (16), searched MBConv blocks (ReLU6), 1x1 conv to 1280,
    global pool, FC."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        first = make_divisible(16 * width_mult)
        layers: list[nn.Module] = [
            conv_bn_act(3, in_ch, 3, 2, act=nn.ReLU6),
            InvertedResidual(in_ch, in_ch, first, 3, 1, nn.ReLU6),
        ]
        in_ch = first
        for t, k, c, s in MOBILE_BLOCKS:
            out_ch = make_divisible(c * width_mult)
            layers.append(InvertedResidual(in_ch, in_ch * t, out_ch, k, s, nn.ReLU6))
            in_ch = out_ch
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        layers.append(conv_bn_act(in_ch, last_ch, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def proxyless_mobile(num_classes: int = 1000, width_mult: float = 1.0) -> ProxylessNAS:
    """ProxylessNAS-Mobile-like (4.1M parameters, ~320 MMACs at 224x224)."""
    return ProxylessNAS(num_classes, width_mult)
