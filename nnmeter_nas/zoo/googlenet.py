"""GoogLeNet-like network (Szegedy et al., 2015) with BatchNorm and without auxiliary heads."""
from __future__ import annotations

import torch
from torch import nn

from .common import conv_bn_act, init_weights


class Inception(nn.Module):
    """Four parallel branches concatenated on channels.

    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3/1 max-pool -> 1x1; every conv is conv-BN-ReLU.
    """

    def __init__(
        self, in_ch: int, c1: int, c3_red: int, c3: int, c5_red: int, c5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = conv_bn_act(in_ch, c1, 1)
        self.branch3 = nn.Sequential(conv_bn_act(in_ch, c3_red, 1), conv_bn_act(c3_red, c3, 3))
        self.branch5 = nn.Sequential(conv_bn_act(in_ch, c5_red, 1), conv_bn_act(c5_red, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_act(in_ch, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            (self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)), dim=1
        )


# (c1, c3_red, c3, c5_red, c5, pool_proj) per inception block, table 1 of the paper;
# "M" is a 3x3/2 ceil-mode max-pool.
INCEPTION_CONFIG = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


class GoogLeNet(nn.Module):
    """GoogLeNet: 7x7/2 stem, 1x1 and 3x3 convs, nine inception blocks, pool, dropout, FC."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.stem = nn.Sequential(
            conv_bn_act(3, 64, 7, 2), pool(),
            conv_bn_act(64, 64, 1), conv_bn_act(64, 192, 3), pool(),
        )
        blocks: list[nn.Module] = []
        in_ch = 192
        for item in INCEPTION_CONFIG:
            if item == "M":
                blocks.append(pool())
            else:
                block = Inception(in_ch, *item)
                blocks.append(block)
                in_ch = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(in_ch, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def googlenet_like(num_classes: int = 1000) -> GoogLeNet:
    """GoogLeNet with BN and real 5x5 branches (7.0M parameters, 1.58 GMACs at 224x224)."""
    return GoogLeNet(num_classes)
