"""ResNet (He et al., 2016): ImageNet ResNet-18/34/50 and the CIFAR ResNet-20.

ResNet-50 uses the "v1.5" bottleneck (stride on the 3x3 conv), like most deployed checkpoints.
"""
from __future__ import annotations

from typing import Sequence, Type, Union

import torch
from torch import nn

from .common import conv_bn_act, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv_bn_act(in_ch, width, 3, stride)
        self.conv2 = conv_bn_act(width, out_ch, 3, 1, act=None)
        self.shortcut = (
            conv_bn_act(in_ch, out_ch, 1, stride, act=None)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), plus shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv_bn_act(in_ch, width, 1)
        self.conv2 = conv_bn_act(width, width, 3, stride)
        self.conv3 = conv_bn_act(width, out_ch, 1, act=None)
        self.shortcut = (
            conv_bn_act(in_ch, out_ch, 1, stride, act=None)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem + 3x3/2 max-pool, four stages, global pool, FC.

    Input ``(N, 3, H, W)``, output ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        block: Block,
        depths: Sequence[int],
        num_classes: int = 1000,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_act(3, base_width, 7, 2), nn.MaxPool2d(3, 2, padding=1)
        )
        stages: list[nn.Module] = []
        in_ch = base_width
        for i, depth in enumerate(depths):
            width = base_width * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(in_ch, width, 2 if (j == 0 and i > 0) else 1))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with 3x3 stem and 16/32/64 channels (He et al., 2016, sec. 4.2).

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``. Shortcuts use 1x1 conv projections.
    """

    def __init__(self, n: int = 3, num_classes: int = 10, base_width: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn_act(3, base_width, 3)
        stages: list[nn.Module] = []
        in_ch = base_width
        for i in range(3):
            width = base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_ch, width, 2 if (j == 0 and i > 0) else 1))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (11.7M parameters, 1.8 GMACs at 224x224)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34 (21.8M parameters, 3.6 GMACs at 224x224)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (25.6M parameters, 4.1 GMACs at 224x224)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def cifar_resnet20(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20 (~0.27M parameters, ~41 MMACs at 32x32)."""
    return CifarResNet(3, num_classes)
