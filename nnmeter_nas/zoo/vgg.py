"""VGG with batch normalisation (Simonyan & Zisserman, 2015)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .common import conv_bn_act, init_weights

# numbers are 3x3 conv output channels, "M" is a 2x2/2 max-pool
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    """VGG: 3x3 conv-BN-ReLU stacks with max-pools, 7x7 adaptive pool, three FC layers.

    ``fc_width`` (4096 in the paper) dominates the parameter count (~120M of 133M).
    """

    def __init__(
        self,
        config: Sequence[Union[int, str]] = tuple(VGG11),
        num_classes: int = 1000,
        fc_width: int = 4096,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(conv_bn_act(in_ch, int(item), 3))
                in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 49, fc_width), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(fc_width, fc_width), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(fc_width, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg11_bn(num_classes: int = 1000, fc_width: int = 4096) -> VGG:
    """VGG-11 with BN (132.9M parameters, 7.6 GMACs at 224x224)."""
    return VGG(VGG11, num_classes, fc_width)
