"""A small NNI 3 model space for examples and tests (``--space toy``): 16x16 inputs, exports in
a few milliseconds.

Labels: ``op1``, ``op2`` (LayerChoice of a 3x3 conv, a 5x5 conv or a depthwise-separable
3x3 conv, each followed by BN + ReLU), ``depth`` (Repeat of 1-3 residual 3x3 blocks) and
``head`` (LayerChoice of a 1x1 conv or a skip), then global pooling and a classifier:
3 x 3 x 3 x 2 = 54 candidates.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["ToySpace", "TOY_INPUT_SHAPE"]

TOY_INPUT_SHAPE = (1, 3, 16, 16)

_SPACE: Any = None


def _conv_bn_relu(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = _conv_bn_relu(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _define() -> Any:
    global _SPACE
    if _SPACE is not None:
        return _SPACE
    import nni
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat

    def ops(cin: int, cout: int) -> dict[str, nn.Module]:
        return {
            "conv3": _conv_bn_relu(cin, cout, 3),
            "conv5": _conv_bn_relu(cin, cout, 5),
            "sep3": nn.Sequential(_conv_bn_relu(cin, cin, 3, groups=cin),
                                  _conv_bn_relu(cin, cout, 1)),
        }

    class ToySpace(ModelSpace):
        """Toy space for tests and examples (see the module docstring)."""

        input_shape = TOY_INPUT_SHAPE

        def __init__(self, width: int = 16, num_classes: int = 10) -> None:
            super().__init__()
            self.layer1 = LayerChoice(ops(3, width), label="op1")
            self.layer2 = LayerChoice(ops(width, width), label="op2")
            self.blocks = Repeat(lambda index: _Residual(width),
                                 nni.choice("depth", [1, 2, 3]))
            self.head = LayerChoice({"conv1": _conv_bn_relu(width, width, 1),
                                     "skip": nn.Identity()}, label="head")
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.head(self.blocks(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.pool(x), 1))

    ToySpace.__module__ = __name__
    ToySpace.__qualname__ = "ToySpace"
    _SPACE = ToySpace
    return ToySpace


def __getattr__(name: str) -> Any:
    if name == "ToySpace":
        return _define()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
