"""MnasNet-A1 (Tan et al., 2019): MBConv blocks, some with squeeze-and-excitation."""
from __future__ import annotations

import torch
from torch import nn

from .common import InvertedResidual, conv_bn_act, init_weights, make_divisible

# (expansion, kernel, output channels, repeats, first stride, use SE), figure 7(a) of the paper.
# The first entry (expansion 1) is the depthwise-separable "SepConv" block.
A1_SETTINGS = [
    (1, 3, 16, 1, 1, False),
    (6, 3, 24, 2, 2, False),
    (3, 5, 40, 3, 2, True),
    (6, 3, 80, 4, 2, False),
    (6, 3, 112, 2, 1, True),
    (6, 5, 160, 3, 2, True),
    (6, 3, 320, 1, 1, False),
]


class MnasNet(nn.Module):
    """MnasNet-A1: 3x3/2 stem (32), MBConv stages, 1x1 conv to 1280, pool, FC.

    SE blocks use ReLU and a sigmoid gate with ``in_ch / 4`` bottleneck channels (ratio 0.25
    of the block input, as in the reference TF implementation).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(3, in_ch, 3, 2)]
        for t, k, c, n, s, use_se in A1_SETTINGS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                se = max(1, int(in_ch * 0.25)) if use_se else 0
                layers.append(
                    InvertedResidual(in_ch, in_ch * t, out_ch, k, s if i == 0 else 1,
                                     nn.ReLU, se, nn.Sigmoid)
                )
                in_ch = out_ch
        layers.append(conv_bn_act(in_ch, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mnasnet_a1(num_classes: int = 1000, width_mult: float = 1.0) -> MnasNet:
    """MnasNet-A1 1.0 (3.9M parameters, 312 MMACs at 224x224)."""
    return MnasNet(num_classes, width_mult)
