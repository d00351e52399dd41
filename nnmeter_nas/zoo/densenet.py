"""DenseNet (Huang et al., 2017), DenseNet-BC with pre-activation (BN-ReLU-conv) layers."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import init_weights


def _bn_relu_conv(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_ch), nn.ReLU(),
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
    )


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size*growth) -> BN-ReLU-3x3 conv (growth); output is the new maps."""

    def __init__(self, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _bn_relu_conv(in_ch, bn_size * growth, 1), _bn_relu_conv(bn_size * growth, growth, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and all previous layers' outputs."""

    def __init__(self, in_ch: int, n_layers: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth, bn_size) for i in range(n_layers)
        )
        self.out_channels = in_ch + n_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat((x, layer(x)), dim=1)
        return x


class DenseNet(nn.Module):
    """DenseNet-BC: 7x7/2 stem + max-pool, dense blocks joined by transitions
    (BN-ReLU-1x1 conv halving channels, 2x2 average pool), final BN-ReLU, pool, FC."""

    def __init__(
        self,
        block_layers: Sequence[int] = (6, 12, 24, 16),
        growth: int = 32,
        init_ch: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, init_ch, 7, 2, 3, bias=False), nn.BatchNorm2d(init_ch), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        ]
        ch = init_ch
        for i, n in enumerate(block_layers):
            block = DenseBlock(ch, n, growth, bn_size)
            layers.append(block)
            ch = block.out_channels
            if i < len(block_layers) - 1:
                layers += [_bn_relu_conv(ch, ch // 2, 1), nn.AvgPool2d(2, 2)]
                ch //= 2
        layers += [nn.BatchNorm2d(ch), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def densenet_like(
    num_classes: int = 1000,
    block_layers: Sequence[int] = (6, 12, 24, 16),
    growth: int = 32,
) -> DenseNet:
    """DenseNet-121 by default (8.0M parameters, 2.9 GMACs at 224x224).

    Pass e.g. ``block_layers=(4, 8, 16, 8)`` for a smaller DenseNet of the same style.
    """
    return DenseNet(block_layers, growth, num_classes=num_classes)
