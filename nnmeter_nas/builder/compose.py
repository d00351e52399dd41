"""Random networks composed of the blocks CNNs are made of, to calibrate a predictor on whole
networks.

A kernel timed alone costs less than the same kernel inside a network (caches, layout
conversions, dispatch; see :mod:`nnmeter_nas.cache_model`). To learn how much without
measuring any network a user will ask about, the builder measures networks it composes at
random from a vocabulary of block families and fits its cache model to them
(:mod:`nnmeter_nas.builder.cache_fit`):

=====================  ==========================================================================
family                 block
=====================  ==========================================================================
``inverted_residual``  1x1 expand (x1/3/4/6), kxk depthwise (k 3/5/7), optional squeeze-excite,
                       1x1 project, residual add (MobileNetV2/V3, MnasNet, ProxylessNAS)
``shuffle``            channel split, 1x1 / kxk depthwise / 1x1 branch or an Xception-like branch
                       of three separable convs, concat, channel shuffle (ShuffleNetV2, SPOS)
``basic``              two 3x3 convs + shortcut (ResNet-18/34, NAS-Bench-201's reduction block)
``bottleneck``         1x1 / 3x3 / 1x1 (x4) + shortcut (ResNet-50)
``separable``          kxk depthwise + 1x1 pointwise (MobileNetV1)
``plain``              kxk conv (k 1/3/5, sometimes grouped), max-pool downsampling (VGG)
``fire``               1x1 squeeze, 1x1 and 3x3 expands concatenated (SqueezeNet, GoogLeNet)
``dense``              densely connected BN-ReLU-conv layers + transition (DenseNet)
``cell``               a 4-node DAG whose edges are 1x1/3x3 ReLU-conv-BN, 3x3 average pooling or
                       identity, summed at every node (NAS-Bench-201); 32x32 networks only
=====================  ==========================================================================

A network is an ImageNet-like one (input 128-224, stem conv, four or five stride-2 stages down
to about 7x7) or a CIFAR-like one (32x32, three stages), each stage of one random family, with
random depths and widths, then global pooling and a classifier. :func:`composed_networks` is
deterministic in its seed. None is any network of the zoo or a search space: the widths,
depths, kernels and families are drawn independently per stage.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..zoo.common import InvertedResidual, conv_bn_act, init_weights
from ..zoo.densenet import DenseBlock
from ..zoo.resnet import BasicBlock, Bottleneck
from ..zoo.shufflenet import channel_shuffle
from ..zoo.squeezenet import Fire

FAMILIES = ("inverted_residual", "shuffle", "basic", "bottleneck", "separable", "plain",
            "fire", "dense", "cell")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


@dataclass
class ComposedNetwork:
    """One composed network: the module (eval mode), its NCHW input shape and a JSON-able
    description of what it was composed of (``stages``: family, blocks, width, stride)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int, int]
    spec: dict[str, Any] = field(default_factory=dict)


def _width(rng: random.Random, ch: float) -> int:
    """A channel count near ``ch``: a multiple of 8 mostly, sometimes of 4 or 2 (the slow
    paths of blocked layouts are part of what networks pay)."""
    div = rng.choices([8, 4, 2], weights=[0.8, 0.12, 0.08])[0]
    return max(div, int(round(ch / div)) * div)


class _ShuffleBlock(nn.Module):
    """ShuffleNetV2/SPOS block: stride 1 splits the channels and transforms one half; stride
    2 transforms the whole input in two branches. The branch is 1x1 -> kxk depthwise -> 1x1,
    or (``xception``) three 3x3 depthwise + 1x1 pairs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel: int, xception: bool,
                 mid_ratio: float, megvii: bool = False) -> None:
        super().__init__()
        self.stride = stride
        # megvii (the SPOS authors' code, NNI's ShuffleNetSpace): shuffle and split at once
        # (reshape, permute, two gathers) at the start of a stride-1 block, no shuffle after
        # the concat; otherwise torchvision's split, concat, shuffle.
        self.megvii = megvii and in_ch % 2 == 0
        keep = in_ch // 2 if stride == 1 else in_ch
        self.keep = keep
        branch_in = in_ch - keep if stride == 1 else in_ch
        branch_out = out_ch - keep
        mid = max(8, int(round(branch_out * mid_ratio / 8)) * 8)
        if xception:
            self.branch = nn.Sequential(
                conv_bn_act(branch_in, branch_in, 3, stride, groups=branch_in, act=None),
                conv_bn_act(branch_in, mid, 1),
                conv_bn_act(mid, mid, 3, 1, groups=mid, act=None), conv_bn_act(mid, mid, 1),
                conv_bn_act(mid, mid, 3, 1, groups=mid, act=None),
                conv_bn_act(mid, branch_out, 1))
        else:
            self.branch = nn.Sequential(
                conv_bn_act(branch_in, mid, 1),
                conv_bn_act(mid, mid, kernel, stride, groups=mid, act=None),
                conv_bn_act(mid, branch_out, 1))
        if stride == 2:
            self.proj = nn.Sequential(
                conv_bn_act(in_ch, in_ch, kernel, 2, groups=in_ch, act=None),
                conv_bn_act(in_ch, keep, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.megvii:
            if self.stride == 1:
                n, c, h, w = x.shape
                x = x.reshape(n * c // 2, 2, h * w).permute(1, 0, 2)
                x = x.reshape(2, -1, c // 2, h, w)
                return torch.cat((x[0], self.branch(x[1])), dim=1)
            return torch.cat((self.proj(x), self.branch(x)), dim=1)
        if self.stride == 1:
            a, b = x.split([self.keep, x.shape[1] - self.keep], dim=1)
            out = torch.cat((a, self.branch(b)), dim=1)
        else:
            out = torch.cat((self.proj(x), self.branch(x)), dim=1)
        return channel_shuffle(out, 2) if out.shape[1] % 2 == 0 else out


class _Cell(nn.Module):
    """A NAS-Bench-201-like cell: node j sums ``op(node i)`` over its incoming edges i < j."""

    def __init__(self, ch: int, ops: list[tuple[int, int, str]]) -> None:
        super().__init__()
        self.edges = [(i, j) for i, j, _ in ops]
        self.ops = nn.ModuleList(self._op(ch, op) for _, _, op in ops)

    @staticmethod
    def _op(ch: int, op: str) -> nn.Module:
        if op in ("conv1x1", "conv3x3"):
            k = 1 if op == "conv1x1" else 3
            return nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, k, 1, k // 2, bias=False),
                                 nn.BatchNorm2d(ch))
        if op == "avgpool":
            return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            terms = [op(nodes[i]) for (i, jj), op in zip(self.edges, self.ops) if jj == j]
            out = terms[0]
            for t in terms[1:]:
                out = out + t
            nodes.append(out)
        return nodes[3]


def _stage(rng: random.Random, family: str, in_ch: int, out_ch: int, stride: int,
           depth: int, act: str) -> tuple[list[nn.Module], int, dict[str, Any]]:
    """``depth`` blocks of ``family`` from ``in_ch`` to about ``out_ch`` channels, the first
    with ``stride``; returns the blocks, the channels out and the stage's description."""
    act_f = ACTIVATIONS[act]
    blocks: list[nn.Module] = []
    info: dict[str, Any] = {"family": family, "depth": depth, "stride": stride}
    ch = in_ch
    if family == "inverted_residual":
        expand = rng.choice([1, 3, 4, 6])
        se = rng.random() < 0.25
        for b in range(depth):
            k = rng.choice([3, 5, 7])
            mid = ch if expand == 1 else _width(rng, ch * expand)
            blocks.append(InvertedResidual(
                ch, mid, out_ch, k, stride if b == 0 else 1, act=act_f,
                se_reduced=max(8, mid // 4) if se else 0,
                se_gate=nn.Hardsigmoid if act == "hswish" else nn.Sigmoid))
            ch = out_ch
        info.update(expand=expand, se=se)
    elif family == "shuffle":
        out_ch += out_ch % 2
        if stride == 2:
            out_ch = max(out_ch, in_ch + 8)
        if stride == 1 and in_ch != out_ch:
            blocks.append(conv_bn_act(in_ch, out_ch, 1))
            ch = out_ch
        ratio = rng.choice([0.5, 1.0])
        megvii = rng.random() < 0.5
        for b in range(depth):
            xcep = rng.random() < 0.25
            blocks.append(_ShuffleBlock(ch, out_ch, stride if b == 0 else 1,
                                        rng.choice([3, 5, 7]), xcep, ratio, megvii))
            ch = out_ch
        info.update(megvii=megvii)
    elif family in ("basic", "bottleneck"):
        cls = BasicBlock if family == "basic" else Bottleneck
        width = max(8, out_ch // cls.expansion)
        for b in range(depth):
            blocks.append(cls(ch, width, stride if b == 0 else 1))
            ch = width * cls.expansion
    elif family == "separable":
        for b in range(depth):
            k = rng.choice([3, 3, 5])
            blocks.append(nn.Sequential(
                conv_bn_act(ch, ch, k, stride if b == 0 else 1, groups=ch, act=act_f),
                conv_bn_act(ch, out_ch, 1, act=act_f)))
            ch = out_ch
    elif family == "plain":
        pool = stride == 2 and rng.random() < 0.5
        if pool:
            blocks.append(nn.MaxPool2d(2, 2))
        for b in range(depth):
            k = rng.choice([1, 3, 3, 5])
            groups = rng.choice([1, 1, 1, 2, 4]) if ch % 4 == 0 and out_ch % 4 == 0 else 1
            s = stride if b == 0 and not pool else 1
            blocks.append(conv_bn_act(ch, out_ch, k, s, groups=groups, act=act_f))
            ch = out_ch
        info.update(maxpool=pool)
    elif family == "fire":
        if stride == 2:
            blocks.append(nn.MaxPool2d(3, 2, ceil_mode=False, padding=1))
        for b in range(depth):
            squeeze = _width(rng, out_ch / rng.choice([4, 8]))
            e1 = _width(rng, out_ch * rng.uniform(0.3, 0.7))
            blocks.append(Fire(ch, squeeze, e1, max(8, out_ch - e1)))
            ch = e1 + max(8, out_ch - e1)
    elif family == "dense":
        growth = rng.choice([8, 12, 16, 24, 32])
        blk = DenseBlock(ch, depth, growth, rng.choice([2, 4]))
        blocks.append(blk)
        ch = blk.out_channels
        trans: list[nn.Module] = [nn.BatchNorm2d(ch), nn.ReLU(),
                                  nn.Conv2d(ch, out_ch, 1, bias=False)]
        if stride == 2:
            trans.append(nn.AvgPool2d(2, 2))
        blocks.append(nn.Sequential(*trans))
        ch = out_ch
        info.update(growth=growth)
    elif family == "cell":
        if stride == 2 or in_ch != out_ch:
            blocks.append(BasicBlock(ch, out_ch, stride))
            ch = out_ch
        for _ in range(depth):
            ops = [(i, j, rng.choice(["conv1x1", "conv3x3", "conv3x3", "avgpool", "skip"]))
                   for j in range(1, 4) for i in range(j)]
            blocks.append(_Cell(ch, ops))
    else:
        raise ValueError(f"unknown block family {family!r}; known: {', '.join(FAMILIES)}")
    info["out_ch"] = ch
    return blocks, ch, info


def random_network(seed: int, *, name: str | None = None) -> ComposedNetwork:
    """One random composed network (deterministic in ``seed``)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    act = rng.choice(list(ACTIVATIONS))
    stages: list[nn.Module] = []
    spec: dict[str, Any] = {"seed": seed, "act": act, "stages": []}
    if rng.random() < 0.25:  # CIFAR-like
        size, ch = 32, rng.choice([16, 24, 32])
        stages.append(conv_bn_act(3, ch, 3, 1, act=ACTIVATIONS[act]))
        plan = [(1, 1), (2, 2), (2, 2)]  # (stride, width factor)
        families = FAMILIES
        classes = rng.choice([10, 100])
    else:
        size = rng.choice([224, 224, 224, 192, 160, 128])
        ch = rng.choice([16, 24, 32, 48, 64])
        stages.append(conv_bn_act(3, ch, 3, 2, act=ACTIVATIONS[act]))
        plan = [(1, 1)] if rng.random() < 0.5 else []
        plan += [(2, rng.uniform(1.3, 2.2)) for _ in range(4)]
        if rng.random() < 0.3:
            plan.insert(rng.randrange(1, len(plan) + 1), (1, rng.uniform(1.2, 1.6)))
        families = tuple(f for f in FAMILIES if f != "cell")
        classes = 1000
    spec["input"] = size
    for stride, factor in plan:
        family = rng.choice(families)
        depth = rng.randint(1, 4) if family != "dense" else rng.randint(2, 6)
        out = min(1024, _width(rng, ch * factor))
        blocks, ch, info = _stage(rng, family, ch, out, stride, depth, act)
        stages.extend(blocks)
        spec["stages"].append(info)
    if rng.random() < 0.5:
        head = rng.choice([512, 1024, 1280])
        stages.append(conv_bn_act(ch, head, 1, act=ACTIVATIONS[act]))
        ch = head
        spec["head"] = head
    stages += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, classes)]
    module = init_weights(nn.Sequential(*stages)).eval()
    return ComposedNetwork(name or f"composed-{seed}", module, (1, 3, size, size), spec)


def composed_networks(n: int, seed: int = 0) -> list[ComposedNetwork]:
    """``n`` random composed networks, deterministic in ``seed``."""
    return [random_network(seed * 100_003 + i, name=f"composed-{seed}-{i:03d}")
            for i in range(n)]
