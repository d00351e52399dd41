"""nn-Meter's reference networks as nn-Meter's own model generator defines them, in PyTorch.

The latencies in ``nnmeter_reference_models.csv`` were measured on TensorFlow graphs that
nn-Meter's dataset generator builds (github.com/microsoft/nn-Meter,
``nn_meter/dataset/generator/networks/tf_network/<family>.py``; ``<family>_0`` is the base
configuration, ``sample=False``). Those graphs are not the torchvision/pytorchcv definitions
of the same names, and the differences are large where the work is:

- every classifier follows a **global average pooling**: VGG's first fully connected layer is
  512 x 4096 (2.1M weights), not torchvision's 25088 x 4096 (103M), and AlexNet's 256 x 4096;
- AlexNet's first convolution is unpadded (224 -> 54 px) and its pools alternate SAME/VALID;
- every inverted residual block has its 1x1 expansion convolution, also at expansion 1
  (MobileNetV2's, MnasNet's, ProxylessNAS's and MobileNetV3's first blocks at 112 x 112);
- ResNet-50 strides in its 3x3 convolutions (pytorchcv's ``resnet50`` strides in the 1x1);
- MnasNet and ProxylessNAS use nn-Meter's own block lists (channels, kernel sizes, expansions,
  strides, squeeze-and-excitation), not MnasNet-A1's or the released ProxylessNAS-Mobile's;
- MobileNetV3 ends with one 1x1 convolution to 1280 (large) / 1024 (small) channels and one
  classifier; DenseNet-121 has a transition (1x1 convolution to half the channels, 2x2 average
  pooling) after its last dense block too.

This module rebuilds those architectures (written here from the generator's block lists; only
the shapes matter: weights are random) so that the kernel configurations we fit on are those
the devices ran. ShuffleNetV2 1.0 keeps pytorchcv's ``shufflenetv2_w1``, whose units match the
generator's (split, 1x1-dw-1x1 branch, concatenation, channel shuffle).

TensorFlow's ``SAME`` padding is written as ``k // 2`` (odd kernels): the same output sizes.
torch is imported by :func:`build_reference_network` only.
"""
from __future__ import annotations

from typing import Any

#: nn-Meter reference networks rebuilt here (the others use pytorchcv).
NNMETER_DEFINED = ("alexnet_0", "densenet_0", "mnasnet_0", "mobilenetv1_0", "mobilenetv2_0",
                   "mobilenetv3large_0", "mobilenetv3small_0", "proxylessnas_0", "resnet18_0",
                   "resnet50_0", "vgg11_0", "vgg16_0", "vgg19_0")

#: Prefix of the network names (config-cache keys) of these definitions.
PREFIX = "nnmeter:"

_VGG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
             "M"],
        19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512,
             512, 512, 512, "M"]}

# MobileNetV3 blocks: kernel, expansion channels, output channels, SE, activation, stride.
_V3_LARGE = [(3, 16, 16, 0, "relu", 1), (3, 64, 24, 0, "relu", 2), (3, 72, 24, 0, "relu", 1),
             (5, 72, 40, 1, "relu", 2), (5, 120, 40, 1, "relu", 1), (5, 120, 40, 1, "relu", 1),
             (3, 240, 80, 0, "hswish", 2), (3, 200, 80, 0, "hswish", 1),
             (3, 184, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1),
             (3, 480, 112, 1, "hswish", 1), (3, 672, 112, 1, "hswish", 1),
             (5, 672, 160, 1, "hswish", 2), (5, 960, 160, 1, "hswish", 1),
             (5, 960, 160, 1, "hswish", 1)]
_V3_SMALL = [(3, 16, 16, 1, "relu", 2), (3, 72, 24, 0, "relu", 2), (3, 88, 24, 0, "relu", 1),
             (5, 96, 40, 1, "hswish", 2), (5, 240, 40, 1, "hswish", 1),
             (5, 240, 40, 1, "hswish", 1), (5, 120, 48, 1, "hswish", 1),
             (5, 144, 48, 1, "hswish", 1), (5, 288, 96, 1, "hswish", 2),
             (5, 576, 96, 1, "hswish", 1), (5, 576, 96, 1, "hswish", 1)]

# MnasNet (nn-Meter's variant): kernel, expansion, output channels, stride, SE (14 blocks).
_MNAS = [(3, 6, 24, 2, 0), (3, 6, 24, 1, 0), (5, 3, 40, 2, 1), (5, 3, 40, 1, 1),
         (5, 3, 80, 1, 1), (3, 6, 80, 2, 0), (3, 6, 80, 1, 0), (3, 6, 80, 1, 0),
         (3, 6, 112, 1, 0), (3, 6, 112, 1, 1), (3, 6, 160, 1, 1), (5, 6, 160, 2, 1),
         (5, 6, 160, 1, 1), (5, 6, 320, 1, 1)]

# ProxylessNAS (nn-Meter's): output channels, kernels, expansions of its 20 blocks; the first
# block of each stage strides as listed.
_PROXY_C = [16] + [32] * 2 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
_PROXY_K = [3, 5, 3, 7, 3, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7]
_PROXY_E = [1, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 6, 3, 3, 6]
_PROXY_STAGES = ((1, 1), (2, 2), (4, 2), (4, 2), (4, 1), (4, 2), (1, 1))  # (blocks, stride)

# MobileNetV2: output channels of the 17 blocks; stages (blocks, stride); expansion 1, then 6.
_V2_C = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
_V2_STAGES = ((1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1))

# MobileNetV1: output channels of the 13 depthwise-separable blocks; stages (blocks, stride).
_V1_C = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
_V1_STAGES = ((1, 1), (2, 2), (2, 2), (6, 2), (2, 2))


def _strides(stages) -> list[int]:
    return [s if j == 0 else 1 for n, s in stages for j in range(n)]


def build_reference_network(name: str) -> Any:
    """nn-Meter reference network ``name`` (``"vgg16_0"`` or ``"nnmeter:vgg16_0"``) as a
    ``torch.nn.Module`` in eval mode, for 1x3x224x224 input (random weights).

    Raises
    ------
    KeyError
        For a name not in :data:`NNMETER_DEFINED`.
    """
    import torch
    from torch import nn

    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in NNMETER_DEFINED:
        raise KeyError(f"no nn-Meter definition of {name!r} here (have {NNMETER_DEFINED})")

    def act(kind: str | None) -> list:
        return {"relu": [nn.ReLU()], "relu6": [nn.ReLU6()], "hswish": [nn.Hardswish()],
                None: []}[kind]

    def cba(cin: int, cout: int, k: int, s: int = 1, a: str | None = "relu",
            bn: bool = True) -> list:
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, bias=not bn)]
        return layers + ([nn.BatchNorm2d(cout)] if bn else []) + act(a)

    def dwba(c: int, k: int, s: int, a: str | None) -> list:
        return [nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False), nn.BatchNorm2d(c)] + act(a)

    class SE(nn.Module):
        """nn-Meter's squeeze-and-excitation: gap, 1x1 to ``mid``, ReLU, 1x1 back, hard
        sigmoid, multiply."""

        def __init__(self, c: int, mid: int) -> None:
            super().__init__()
            self.f = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, mid, 1), nn.ReLU(),
                                   nn.Conv2d(mid, c, 1), nn.Hardsigmoid())

        def forward(self, x):
            return x * self.f(x)

    class Residual(nn.Module):
        def __init__(self, body: nn.Module, proj: nn.Module | None, post: list) -> None:
            super().__init__()
            self.body, self.proj, self.post = body, proj, nn.Sequential(*post)

        def forward(self, x):
            return self.post(self.body(x) + (x if self.proj is None else self.proj(x)))

    def inverted(cin: int, k: int, cout: int, s: int, mid: int, se: bool, a: str) -> nn.Module:
        # expansion conv always present (nn-Meter's inverted_block / inverted_block_v3);
        # SE between the depthwise convolution's batch norm and its activation
        layers = cba(cin, mid, 1, 1, a) + dwba(mid, k, s, None)
        if se:
            layers.append(SE(mid, mid // 4))
        layers += act(a) + cba(mid, cout, 1, 1, None)
        body = nn.Sequential(*layers)
        return Residual(body, None, []) if s == 1 and cin == cout else body

    def head(c: int, fcs: list[int]) -> list:
        out: list = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for i, f in enumerate(fcs):
            out.append(nn.Linear(c, f, bias=False))
            if i < len(fcs) - 1:
                out.append(nn.ReLU())
            c = f
        return out

    L: list = []
    if key == "alexnet_0":
        L = ([nn.Conv2d(3, 64, 11, 4, 0), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
             + cba(64, 192, 5, bn=False) + [nn.MaxPool2d(3, 2)]
             + cba(192, 384, 3, bn=False) + cba(384, 256, 3, bn=False)
             + cba(256, 256, 3, bn=False) + [nn.MaxPool2d(3, 2)]
             + head(256, [4096, 4096, 1000]))
    elif key.startswith("vgg"):
        c = 3
        for v in _VGG[int(key[3:5])]:
            if v == "M":
                L.append(nn.MaxPool2d(2, 2))
            else:
                L += cba(c, v, 3)
                c = v
        L += head(c, [4096, 4096, 1000])
    elif key in ("resnet18_0", "resnet50_0"):
        L = cba(3, 64, 7, 2) + [nn.MaxPool2d(3, 2, 1)]
        c = 64
        if key == "resnet18_0":
            plan = [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]
        else:
            plan = ([(256, 1)] * 3 + [(512, 2)] + [(512, 1)] * 3 + [(1024, 2)]
                    + [(1024, 1)] * 5 + [(2048, 2)] + [(2048, 1)] * 2)
        for out, s in plan:
            if key == "resnet18_0":
                body = nn.Sequential(*cba(c, out, 3, s), *cba(out, out, 3, 1, None))
            else:
                m = out // 4
                body = nn.Sequential(*cba(c, m, 1), *cba(m, m, 3, s), *cba(m, out, 1, 1, None))
            proj = nn.Sequential(*cba(c, out, 1, s, None)) if s != 1 or c != out else None
            L.append(Residual(body, proj, [nn.ReLU()]))
            c = out
        L += head(c, [1000])
    elif key == "mobilenetv1_0":
        L = cba(3, 32, 3, 2)
        c = 32
        for out, s in zip(_V1_C, _strides(_V1_STAGES)):
            L += dwba(c, 3, s, "relu") + cba(c, out, 1)
            c = out
        L += head(c, [1000])
    elif key == "mobilenetv2_0":
        L = cba(3, 32, 3, 2, "relu6")
        c = 32
        for i, (out, s) in enumerate(zip(_V2_C, _strides(_V2_STAGES))):
            L.append(inverted(c, 3, out, s, round(c * (1 if i == 0 else 6)), False, "relu6"))
            c = out
        L += cba(c, 1280, 1) + head(1280, [1000])
    elif key in ("mobilenetv3large_0", "mobilenetv3small_0"):
        large = key == "mobilenetv3large_0"
        L = cba(3, 16, 3, 2, "hswish")
        c = 16
        for k, e, out, se, a, s in (_V3_LARGE if large else _V3_SMALL):
            L.append(inverted(c, k, out, s, e, bool(se), a))
            c = out
        last = 1280 if large else 1024
        L += cba(c, last, 1, 1, "hswish") + head(last, [1000])
    elif key == "mnasnet_0":
        L = cba(3, 32, 3, 2) + dwba(32, 3, 1, "relu") + cba(32, 16, 1, 1, None)
        c = 16
        for k, e, out, s, se in _MNAS:
            L.append(inverted(c, k, out, s, round(c * e), bool(se), "relu"))
            c = out
        L += cba(c, 1280, 1) + head(1280, [1000])
    elif key == "proxylessnas_0":
        L = cba(3, 32, 3, 2, "relu6")
        c = 32
        for out, k, e, s in zip(_PROXY_C, _PROXY_K, _PROXY_E, _strides(_PROXY_STAGES)):
            L.append(inverted(c, k, out, s, round(c * e), False, "relu6"))
            c = out
        L += cba(c, 1280, 1) + head(1280, [1000])
    elif key == "densenet_0":

        class Dense(nn.Module):
            def __init__(self, cin: int) -> None:
                super().__init__()
                self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), *cba(cin, 128, 1),
                                       nn.Conv2d(128, 32, 3, 1, 1))

            def forward(self, x):
                return torch.cat([x, self.f(x)], 1)

        L = cba(3, 64, 7, 2) + [nn.MaxPool2d(3, 2, 1)]
        c = 64
        for n in (6, 12, 24, 16):
            for _ in range(n):
                L.append(Dense(c))
                c += 32
            L += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1),
                  nn.AvgPool2d(2, 2, ceil_mode=True)]
            c //= 2
        L += head(c, [1000])
    return nn.Sequential(*L).eval()


__all__ = ["NNMETER_DEFINED", "PREFIX", "build_reference_network"]
