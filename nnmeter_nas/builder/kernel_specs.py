"""What the builder measures: one small torch module per kernel configuration.

A :class:`KernelSpec` knows how to draw configurations of one kernel from a prior over the
shapes mobile CNNs and NAS spaces use, how to perturb a configuration (adaptive sampling), and
how to build the torch module that computes exactly that kernel. The features a regressor is
trained on are not computed here: the builder exports the module, runs the engine's
``load_graph`` + ``detect_kernels`` on it and takes ``extract_features`` of the kernel found,
so training and prediction share one feature code path.

Each spec also says which of the kernel's inputs and outputs are, in the networks it comes
from, produced/consumed by a convolution-like operator (``conv_inputs``/``conv_outputs``).
The measurement puts a cheap convolution-like neighbour (a 1x1 max-pool) there, so a kernel
that forces a layout change on a backend (onnxruntime's NCHWc blocked layout around a
reshape, split, broadcast multiply...) pays for it, as it does inside a network; the
neighbour's own time is taken out again (see :mod:`nnmeter_nas.builder.measure`).

Shapes: configs use ``hw`` (square input height = width), channels ``cin``/``cout``/``c``;
modules take NCHW float inputs with batch 1.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any, Callable

Config = dict  # JSON-serialisable dict of ints and strings

# Input sizes of ImageNet networks (224 -> 7), CIFAR-sized NAS cells (32 -> 8) and odd sizes
# (weighted: the grid values dominate real networks).
HW_GRID = (224, 112, 56, 28, 14, 7)
HW_CIFAR = (32, 16, 8)
# Channel counts of MobileNetV1/V2/V3, ShuffleNetV2, SPOS, ProxylessNAS, MnasNet, ResNet,
# VGG, DenseNet, GoogLeNet, SqueezeNet, NAS-Bench-201.
CHANNEL_GRID = (3, 8, 12, 16, 24, 32, 40, 48, 56, 58, 64, 72, 80, 88, 96, 112, 116, 120, 128,
                144, 160, 176, 184, 192, 200, 208, 232, 240, 256, 288, 320, 352, 384, 464,
                480, 512, 576, 640, 672, 720, 768, 960, 1024, 1152, 1280, 2048)

# Typical channel range at each input size (lo, hi), interpolated log-log in between.
_CH_RANGE = ((224, 3, 64), (112, 8, 192), (56, 12, 384), (32, 8, 192), (28, 16, 768),
             (16, 16, 384), (14, 32, 1280), (8, 32, 768), (7, 64, 2560), (4, 64, 1024),
             (1, 8, 4096))


def channel_range(hw: int) -> tuple[int, int]:
    """(lo, hi) channel counts seen at input size ``hw`` in mobile and classic CNNs."""
    pts = sorted(_CH_RANGE)
    if hw <= pts[0][0]:
        return pts[0][1], pts[0][2]
    if hw >= pts[-1][0]:
        return pts[-1][1], pts[-1][2]
    for (h0, lo0, hi0), (h1, lo1, hi1) in zip(pts, pts[1:]):
        if h0 <= hw <= h1:
            t = (math.log(hw) - math.log(h0)) / (math.log(h1) - math.log(h0))
            lo = math.exp(math.log(lo0) + t * (math.log(lo1) - math.log(lo0)))
            hi = math.exp(math.log(hi0) + t * (math.log(hi1) - math.log(hi0)))
            return max(1, int(round(lo))), max(2, int(round(hi)))
    return 8, 1024


def sample_hw(rng: random.Random, *, lo: int = 7, hi: int = 224) -> int:
    u = rng.random()
    if u < 0.62:
        choices = [h for h in HW_GRID if lo <= h <= hi]
    elif u < 0.82:
        choices = [h for h in HW_CIFAR if lo <= h <= hi]
    else:
        return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    return rng.choice(choices or [lo])


def sample_channels(rng: random.Random, hw: int, *, lo: int | None = None,
                    hi: int | None = None) -> int:
    """A channel count: a value of :data:`CHANNEL_GRID` in the typical range for ``hw`` (55%),
    a log-uniform multiple of 8 (35%) or any integer (10%) in that range."""
    clo, chi = channel_range(hw)
    lo = max(1, clo if lo is None else lo)
    hi = max(lo, chi if hi is None else hi)
    u = rng.random()
    if u < 0.55:
        grid = [c for c in CHANNEL_GRID if lo <= c <= hi]
        if grid:
            return rng.choice(grid)
    c = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    if u < 0.9:
        c = max(8, int(round(c / 8)) * 8)
    return int(min(max(c, lo), max(hi, lo)))


def _near(rng: random.Random, v: int, rel: float = 0.25, lo: int = 1, hi: int = 4096) -> int:
    """A value near ``v`` (log-uniform within +-rel), clipped to [lo, hi]."""
    f = math.exp(rng.uniform(-math.log1p(rel), math.log1p(rel)))
    return int(min(max(int(round(v * f)), lo), hi))


def _near_channels(rng: random.Random, v: int, rel: float = 0.3, lo: int = 4,
                   hi: int = 4096) -> int:
    """A channel count near ``v``: a multiple of 8 three times in four (networks mostly use
    them, and onnxruntime's blocked-layout kernels need them), any integer otherwise."""
    c = _near(rng, v, rel, lo, hi)
    if rng.random() < 0.75:
        c = max(8, int(round(c / 8)) * 8)
    return int(min(max(c, lo), hi))


@dataclass(kw_only=True)
class KernelSpec:
    """How to sample, perturb and build one kernel.

    ``build(config)`` returns ``(module, input_shapes)`` (NCHW). ``neighbours(config)`` returns
    ``(conv_inputs, conv_outputs)``: per module input/output, whether a convolution-like
    operator sits there in a real network. ``max_flops`` rejects configurations that are
    too slow to measure (FLOPs, ``None``: no limit). ``regressor`` is the regressor the
    measurement trains; when it is empty, ``folds`` lists the regressors of the kernels the
    engine may report inside this module: the whole cost goes to the first kernel reported and
    the others are *folded* into it (the package then declares their types as costing nothing
    on their own, naming this spec as the reason). ``weight`` is the spec's share of the
    measurement budget. ``cold_weights`` measures the kernel with the caches flushed before
    every run: in a network a layer whose weights are large and read once per inference (the
    classifier) finds them evicted by the rest of the network, while a kernel timed alone in
    a loop finds them cached. ``variants(config)`` lists the configuration with each other
    value of a categorical choice (the activation of a convolution), for paired sampling.
    """

    name: str
    prior: Callable[[random.Random], Config]
    perturb: Callable[[Config, random.Random], Config]
    build: Callable[[Config], tuple[Any, list[list[int]]]]
    neighbours: Callable[[Config], tuple[list[bool], list[bool]]]
    regressor: str = ""
    flops: Callable[[Config], float] = lambda c: 0.0
    max_flops: float | None = None
    folds: tuple[str, ...] = ()
    weight: float = 1.0
    doc: str = ""
    cold_weights: bool = False
    # The same configuration with each other value of a categorical choice (a convolution's
    # activation): measured in pairs, the regressor sees the choice's own effect.
    variants: Callable[[Config], list[Config]] | None = None

    def __post_init__(self) -> None:
        if not self.regressor and not self.folds:
            self.regressor = self.name

    def sample(self, rng: random.Random, *, tries: int = 200) -> Config:
        for _ in range(tries):
            cfg = self.prior(rng)
            if self.max_flops is None or self.flops(cfg) <= self.max_flops:
                return cfg
        raise RuntimeError(f"kernel spec {self.name!r}: no configuration under "
                           f"{self.max_flops:g} FLOPs in {tries} draws")

    def neighbour(self, cfg: Config, rng: random.Random, *, tries: int = 50) -> Config:
        for _ in range(tries):
            new = self.perturb(dict(cfg), rng)
            if new != cfg and (self.max_flops is None or self.flops(new) <= self.max_flops):
                return new
        return self.sample(rng)


# --------------------------------------------------------------------------- torch modules
def _torch():
    import torch
    from torch import nn

    return torch, nn


def _act(name: str):
    _, nn = _torch()
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish,
            "none": nn.Identity}[name]()


def _conv_module(cfg: Config):
    torch, nn = _torch()
    cin, cout, k, s, g = cfg["cin"], cfg["cout"], cfg["k"], cfg["s"], cfg.get("groups", 1)
    n_add = cfg.get("n_add", 0)

    class ConvKernel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.act = _act(cfg.get("act", "relu"))

        def forward(self, x, *res):
            y = self.bn(self.conv(x))
            for r in res:
                y = y + r
            return self.act(y)

    out_hw = (cfg["hw"] + 2 * (k // 2) - k) // s + 1
    shapes = [[1, cin, cfg["hw"], cfg["hw"]]] + [[1, cout, out_hw, out_hw]] * n_add
    return ConvKernel(), shapes


def _conv_flops(cfg: Config) -> float:
    hw = cfg["hw"] / cfg["s"]
    return 2.0 * hw * hw * cfg["cout"] * cfg["k"] ** 2 * cfg["cin"] / cfg.get("groups", 1)


def _allowed_acts(rules: Any, op: str) -> tuple[list[str], list[int]]:
    """Activations a conv/dwconv kernel may end with under ``rules`` (those that fuse)."""
    acts, weights = ["relu", "none", "relu6", "hswish"], [50, 30, 10, 10]
    fuses = {"relu": "relu", "relu6": "relu", "hswish": "hswish", "none": None}
    keep = [(a, w) for a, w in zip(acts, weights)
            if fuses[a] is None or rules is None or rules.is_fusible(op, fuses[a])]
    return [a for a, _ in keep], [w for _, w in keep]


def _act_variants(rules: Any, op: str) -> Callable[[Config], list[Config]]:
    acts, _ = _allowed_acts(rules, op)

    def variants(cfg: Config) -> list[Config]:
        return [{**cfg, "act": a} for a in acts if a != cfg.get("act")]

    return variants


def _conv_prior_for(rules: Any) -> Callable[[random.Random], Config]:
    acts, act_w = _allowed_acts(rules, "conv")
    adds = rules is None or rules.is_fusible("conv", "add")

    def prior(rng: random.Random) -> Config:
        cfg = _conv_prior(rng)
        cfg["act"] = rng.choices(acts, weights=act_w)[0]
        if not adds:
            cfg["n_add"] = 0
        return cfg

    return prior


def _dwconv_prior_for(rules: Any) -> Callable[[random.Random], Config]:
    acts, act_w = _allowed_acts(rules, "dwconv")

    def prior(rng: random.Random) -> Config:
        cfg = _dwconv_prior(rng)
        cfg["act"] = rng.choices(acts, weights=act_w)[0]
        return cfg

    return prior


def _conv_prior(rng: random.Random) -> Config:
    u = rng.random()
    if u < 0.06:  # network stem: 3 input channels, large input, 3x3 .. 7x7, stride 2
        hw = rng.choice([224, 224, 192, 160, 112, 32])
        cin, k, s = 3, rng.choice([3, 3, 5, 7]), rng.choice([2, 2, 1])
        cout = sample_channels(rng, 112, lo=8, hi=96)
    else:
        hw = sample_hw(rng, lo=1 if rng.random() < 0.04 else 7, hi=112)
        k = rng.choices([1, 3, 5, 7], weights=[55, 38, 4, 3])[0]
        s = 2 if rng.random() < 0.15 and hw >= 4 else 1
        cin = sample_channels(rng, hw)
        if rng.random() < 0.35:  # expansion / projection ratios of inverted residuals
            cout = max(8, int(round(cin * rng.choice([0.25, 1 / 6, 0.5, 2, 3, 4, 6]) / 8)) * 8)
        else:
            cout = sample_channels(rng, hw)
    groups = 1
    if rng.random() < 0.08 and cin >= 8:
        groups = rng.choice([g for g in (2, 4, 8, 16, 32) if cin % g == 0 and cout % g == 0]
                            or [1])
    act = rng.choices(["relu", "none", "relu6", "hswish"], weights=[50, 30, 10, 10])[0]
    n_add = rng.choices([0, 1, 2], weights=[75, 20, 5])[0] if s == 1 else 0
    return {"hw": hw, "cin": cin, "cout": cout, "k": k, "s": s, "groups": groups, "act": act,
            "n_add": n_add}


def _conv_perturb(cfg: Config, rng: random.Random) -> Config:
    which = rng.choice(["hw", "cin", "cout", "cin+cout", "k", "s"])
    if which == "hw":
        cfg["hw"] = _near(rng, cfg["hw"], 0.3, 1, 256)
    if which in ("cin", "cin+cout") and cfg["cin"] != 3:
        cfg["cin"] = _near_channels(rng, cfg["cin"])
    if which in ("cout", "cin+cout"):
        cfg["cout"] = _near_channels(rng, cfg["cout"])
    if which == "k":
        cfg["k"] = rng.choice([1, 3, 5, 7])
    if which == "s":
        cfg["s"] = 3 - cfg["s"]
        if cfg["s"] == 2:
            cfg["n_add"] = 0
    g = cfg.get("groups", 1)
    if cfg["cin"] % g or cfg["cout"] % g:
        cfg["groups"] = 1
    return cfg


def _dwconv_module(cfg: Config):
    _, nn = _torch()
    c, k, s = cfg["c"], cfg["k"], cfg["s"]
    return (nn.Sequential(nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False),
                          nn.BatchNorm2d(c), _act(cfg.get("act", "relu"))),
            [[1, c, cfg["hw"], cfg["hw"]]])


def _dwconv_prior(rng: random.Random) -> Config:
    hw = sample_hw(rng, lo=7, hi=112)
    return {"hw": hw, "c": sample_channels(rng, hw, lo=8),
            "k": rng.choices([3, 5, 7], weights=[55, 25, 20])[0],
            "s": 2 if rng.random() < 0.2 else 1,
            "act": rng.choices(["relu", "none", "relu6", "hswish"], weights=[40, 30, 15, 15])[0]}


def _dwconv_perturb(cfg: Config, rng: random.Random) -> Config:
    which = rng.choice(["hw", "c", "c", "k", "s"])
    if which == "hw":
        cfg["hw"] = _near(rng, cfg["hw"], 0.3, 3, 256)
    elif which == "c":
        cfg["c"] = _near_channels(rng, cfg["c"])
    elif which == "k":
        cfg["k"] = rng.choice([3, 5, 7])
    else:
        cfg["s"] = 3 - cfg["s"]
    return cfg


def _fc_module(cfg: Config):
    _, nn = _torch()
    layers = [nn.Linear(cfg["cin"], cfg["cout"])]
    if cfg.get("act") == "relu":
        layers.append(nn.ReLU())
    return nn.Sequential(*layers), [[1, cfg["cin"]]]


def _fc_prior(rng: random.Random) -> Config:
    cin = rng.choice([rng.choice([64, 128, 256, 512, 576, 960, 1024, 1280, 2048, 4096, 25088]),
                      int(math.exp(rng.uniform(math.log(16), math.log(8192))))])
    cout = rng.choice([rng.choice([10, 100, 1000, 1024, 1280, 4096]),
                       int(math.exp(rng.uniform(math.log(8), math.log(4096))))])
    return {"cin": cin, "cout": cout, "act": "relu" if rng.random() < 0.25 else "none"}


def _fc_perturb(cfg: Config, rng: random.Random) -> Config:
    key = rng.choice(["cin", "cout"])
    cfg[key] = _near_channels(rng, cfg[key], hi=32768)
    return cfg


def _pool_module(kind: str):
    def build(cfg: Config):
        _, nn = _torch()
        k, s, c, hw = cfg["k"], cfg["s"], cfg["c"], cfg["hw"]
        pad = cfg.get("pad", k // 2 if k == 3 else 0)
        if kind == "maxpool":
            mod = nn.MaxPool2d(k, s, pad, ceil_mode=bool(cfg.get("ceil", 0)))
        else:
            mod = nn.AvgPool2d(k, s, pad, ceil_mode=bool(cfg.get("ceil", 0)),
                               count_include_pad=bool(cfg.get("include_pad", 0)))
        return mod, [[1, c, hw, hw]]
    return build


def _pool_prior(kind: str):
    def prior(rng: random.Random) -> Config:
        hw = sample_hw(rng, lo=7, hi=112)
        k, s = rng.choice([(3, 2), (3, 2), (3, 1), (2, 2), (2, 2)])
        if kind == "avgpool" and rng.random() < 0.1:
            k, s = 1, 1
        pad = k // 2 if k == 3 and rng.random() < 0.75 else 0
        cfg = {"hw": hw, "c": sample_channels(rng, hw), "k": k, "s": s, "pad": pad,
               "ceil": int(rng.random() < 0.15)}
        if kind == "avgpool":
            cfg["include_pad"] = int(rng.random() < 0.5)
        return cfg
    return prior


def _pool_perturb(cfg: Config, rng: random.Random) -> Config:
    if rng.random() < 0.5:
        cfg["hw"] = _near(rng, cfg["hw"], 0.3, 3, 256)
    else:
        cfg["c"] = _near_channels(rng, cfg["c"])
    return cfg


def _hwc_prior(lo_hw: int = 7, hi_hw: int = 112, lo_c: int | None = None):
    def prior(rng: random.Random) -> Config:
        hw = sample_hw(rng, lo=lo_hw, hi=hi_hw)
        return {"hw": hw, "c": sample_channels(rng, hw, lo=lo_c)}
    return prior


def _hwc_perturb(cfg: Config, rng: random.Random) -> Config:
    if rng.random() < 0.5:
        cfg["hw"] = _near(rng, cfg["hw"], 0.3, 1, 256)
    else:
        cfg["c"] = _near_channels(rng, cfg["c"], lo=2)
    if "c" in cfg and cfg.get("even"):
        cfg["c"] = max(2, cfg["c"] // 2 * 2)
    return cfg


def _x(cfg: Config) -> list[list[int]]:
    return [[1, cfg["c"], cfg["hw"], cfg["hw"]]]


def _lambda_module(fn: Callable, name: str):
    _, nn = _torch()

    class Lambda(nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    Lambda.__name__ = Lambda.__qualname__ = name
    return Lambda()


def _gap_module(cfg: Config):
    torch, nn = _torch()
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), _x(cfg)


def _relu_module(cfg: Config):
    _, nn = _torch()
    return nn.ReLU(), _x(cfg)


def _bn_module(cfg: Config):
    _, nn = _torch()
    return nn.BatchNorm2d(cfg["c"]), _x(cfg)


def _bnrelu_module(cfg: Config):
    _, nn = _torch()
    return nn.Sequential(nn.BatchNorm2d(cfg["c"]), nn.ReLU()), _x(cfg)


def _hswish_module(cfg: Config):
    _, nn = _torch()
    if cfg.get("rank", 4) == 2:
        return nn.Hardswish(), [[1, cfg["c"]]]
    return nn.Hardswish(), _x(cfg)


def _hswish_prior(rng: random.Random) -> Config:
    if rng.random() < 0.4:
        return {"hw": 1, "c": rng.choice([256, 512, 1024, 1280, 2048,
                                          int(math.exp(rng.uniform(math.log(16),
                                                                   math.log(4096))))]),
                "rank": 2}
    cfg = _hwc_prior()(rng)
    cfg["rank"] = 4
    return cfg


def _add_module(relu: bool):
    def build(cfg: Config):
        torch, _ = _torch()
        fn = (lambda a, b: torch.relu(a + b)) if relu else (lambda a, b: a + b)
        return _lambda_module(fn, "AddRelu" if relu else "Add"), _x(cfg) * 2
    return build


def _concat_module(cfg: Config):
    torch, _ = _torch()
    cs = cfg["cs"]
    return (_lambda_module(lambda *xs: torch.cat(xs, 1), "Concat"),
            [[1, c, cfg["hw"], cfg["hw"]] for c in cs])


def _concat_prior(rng: random.Random) -> Config:
    hw = sample_hw(rng, lo=7, hi=112)
    n = rng.choices([2, 3, 4], weights=[70, 10, 20])[0]
    if n == 2 and rng.random() < 0.5:  # ShuffleNet / SPOS: halves of a block's output
        c = sample_channels(rng, hw, lo=8)
        cs = [max(4, c // 2), max(4, c - c // 2)] if rng.random() < 0.5 else \
            [sample_channels(rng, hw, lo=8), sample_channels(rng, hw, lo=8)]
        plain_first = 1
    else:
        cs = [sample_channels(rng, hw, lo=8, hi=max(16, channel_range(hw)[1] // 2))
              for _ in range(n)]
        plain_first = 0
    return {"hw": hw, "cs": cs, "plain_first": plain_first}


def _concat_perturb(cfg: Config, rng: random.Random) -> Config:
    if rng.random() < 0.3:
        cfg["hw"] = _near(rng, cfg["hw"], 0.3, 3, 256)
    else:
        i = rng.randrange(len(cfg["cs"]))
        cs = list(cfg["cs"])
        cs[i] = _near_channels(rng, cs[i], lo=2)
        cfg["cs"] = cs
    return cfg


def _split_module(cfg: Config):
    return (_lambda_module(lambda x: x.chunk(2, dim=1), "Split"), _x(cfg))


def _shuffle5d_module(cfg: Config):
    g = 2

    def shuffle(x):
        n, c, h, w = x.shape
        x = x.reshape(n, g, c // g, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)

    return _lambda_module(shuffle, "ChannelShuffle"), _x(cfg)


def _nni_shuffle_module(cfg: Config):
    # NNI ShuffleNetSpace._channel_shuffle: reshape (3-D) -> permute -> reshape (5-D) -> x[0], x[1]
    def shuffle(x):
        bs, c, h, w = x.shape
        x = x.reshape(bs * c // 2, 2, h * w).permute(1, 0, 2)
        x = x.reshape(2, -1, c // 2, h, w)
        return x[0], x[1]

    return _lambda_module(shuffle, "SPOSChannelShuffle"), _x(cfg)


def _even_prior(rng: random.Random) -> Config:
    hw = sample_hw(rng, lo=7, hi=112)
    c = sample_channels(rng, hw, lo=16)
    return {"hw": hw, "c": max(2, c // 2 * 2), "even": 1}


def _se_module(cfg: Config):
    torch, nn = _torch()
    c, mid = cfg["c"], cfg["mid"]
    gate = nn.Hardsigmoid if cfg.get("gate") == "hsigmoid" else nn.Sigmoid

    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, mid, 1)
            self.act = nn.ReLU()
            self.fc2 = nn.Conv2d(mid, c, 1)
            self.gate = gate()

        def forward(self, x):
            return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))

    return SE(), _x(cfg)


def _se_prior(rng: random.Random) -> Config:
    hw = sample_hw(rng, lo=7, hi=112)
    c = sample_channels(rng, hw, lo=16)
    mid = max(8, int(round(c / rng.choice([4, 4, 4, 8, 16]) / 8)) * 8)
    return {"hw": hw, "c": c, "mid": mid, "gate": rng.choice(["hsigmoid", "sigmoid"])}


def _se_perturb(cfg: Config, rng: random.Random) -> Config:
    cfg = _hwc_perturb(cfg, rng)
    cfg["mid"] = max(8, int(round(cfg["c"] / 4 / 8)) * 8)
    return cfg


def _flatten_module(cfg: Config):
    _, nn = _torch()
    return nn.Flatten(1), _x(cfg)


def _flatten_prior(rng: random.Random) -> Config:
    hw = rng.choice([1, 1, 7, 7, 6, 4, 2, 14])
    return {"hw": hw, "c": sample_channels(rng, 7, lo=64)}


def _mul_module(cfg: Config):
    return _lambda_module(lambda x: x * 0.0 if cfg.get("scalar") else x * x, "Mul"), _x(cfg)


def _sigmoid_module(cfg: Config):
    _, nn = _torch()
    return nn.Sigmoid(), _x(cfg)


def _pad_module(cfg: Config):
    torch, _ = _torch()
    p = cfg.get("p", 1)
    return _lambda_module(lambda x: torch.nn.functional.pad(x, (p, p, p, p)), "Pad"), _x(cfg)


def _all(n_in: int, n_out: int, conv_in: bool = True, conv_out: bool = True):
    return lambda cfg: ([conv_in] * n_in, [conv_out] * n_out)


def _hwc_flops(cfg: Config) -> float:
    return float(cfg.get("hw", 1)) ** 2 * cfg.get("c", 1)


# --------------------------------------------------------------------------- the registry
#: name -> (the spec's keyword fields, ``rules -> fields`` that depend on the fusion rules)
_REGISTRY: dict[str, tuple[dict[str, Any], Callable[[Any], dict[str, Any]] | None]] = {}


def register_kernel_spec(name: str, *, prior: Callable[[random.Random], Config] | None = None,
                         perturb: Callable[[Config, random.Random], Config],
                         build: Callable[[Config], tuple[Any, list[list[int]]]],
                         neighbours: Callable[[Config], tuple[list[bool], list[bool]]],
                         for_rules: Callable[[Any], dict[str, Any]] | None = None,
                         replace: bool = False, **options: Any) -> None:
    """Add a kernel spec to those the builder measures (as NNI's ``register_flops_formula``).

    Parameters
    ----------
    name : str
        Spec name (by default also the regressor it trains).
    prior, perturb, build, neighbours : callable
        The :class:`KernelSpec` fields of the same names. ``prior`` may instead come from
        ``for_rules``.
    for_rules : callable, default=None
        ``rules -> {field: value}``: fields that depend on the device's fusion rules (a
        :class:`~nnmeter_nas.kernels.FusionRules` or None), e.g. a convolution's prior that
        only draws activations the device fuses.
    replace : bool, default=False
        Replace a spec of that name instead of refusing.
    **options
        Other :class:`KernelSpec` fields: ``regressor``, ``flops``, ``max_flops``, ``folds``,
        ``weight``, ``doc``, ``cold_weights``, ``variants``.

    Raises
    ------
    ValueError
        If ``name`` is registered already and ``replace`` is False.
    TypeError
        For an unknown field, or without ``prior`` (or ``for_rules``).

    Examples
    --------
    A GELU kernel on ``(1, c, hw, hw)`` inputs; ``neighbours`` says a convolution-like
    operator sits before and after it in real networks:

    >>> import random, torch
    >>> from nnmeter_nas.builder.kernel_specs import kernel_specs, register_kernel_spec
    >>> def prior(rng):
    ...     return {"hw": rng.choice([7, 14, 28, 56]), "c": rng.choice([16, 32, 64])}
    >>> def perturb(cfg, rng):
    ...     return dict(cfg, c=max(8, cfg["c"] + rng.choice([-8, 8])))
    >>> def build(cfg):
    ...     return torch.nn.GELU(), [[1, cfg["c"], cfg["hw"], cfg["hw"]]]
    >>> register_kernel_spec("gelu", prior=prior, perturb=perturb, build=build,
    ...                      neighbours=lambda cfg: ([True], [True]),
    ...                      flops=lambda cfg: cfg["hw"] ** 2 * cfg["c"], weight=0.5)
    >>> spec = kernel_specs()["gelu"]                 # the builder now measures it too
    >>> spec.regressor, spec.weight
    ('gelu', 0.5)
    >>> module, input_shapes = spec.build(spec.sample(random.Random(0)))
    >>> type(module).__name__, len(input_shapes)
    ('GELU', 1)
    """
    if name in _REGISTRY and not replace:
        raise ValueError(f"kernel spec {name!r} is already registered; pass replace=True")
    unknown = set(options) - {f.name for f in fields(KernelSpec)}
    if unknown:
        raise TypeError(f"kernel spec {name!r}: unknown fields {sorted(unknown)}")
    spec_fields = dict(options, perturb=perturb, build=build, neighbours=neighbours)
    if prior is not None:
        spec_fields["prior"] = prior
    elif for_rules is None:
        raise TypeError(f"kernel spec {name!r} needs prior= (or for_rules= giving one)")
    _REGISTRY[name] = (spec_fields, for_rules)


def kernel_specs(rules: Any = None) -> dict[str, KernelSpec]:
    """The registered kernel specs, by name, set up for the device's fusion ``rules``.

    With ``rules`` (a :class:`~nnmeter_nas.kernels.FusionRules`), the convolution specs only
    end with activations (and residual adds) that fuse into them, so every module holds exactly
    one kernel.

    Several specs may train the same regressor (``channelshuffle`` is fed by the 5-D shuffle
    of ShuffleNetV2 only; NNI's SPOS shuffle is its own spec whose cost lands on the first
    kernel the engine reports for it).
    """
    out = {}
    for name, (spec_fields, for_rules) in _REGISTRY.items():
        kw = dict(spec_fields)
        if for_rules is not None:
            kw.update(for_rules(rules))
        out[name] = KernelSpec(name=name, **kw)
    return out


#: The built-in predictors' specs (the name the builder has always used).
default_specs = kernel_specs


# --------------------------------------------------------------------------- built-in specs
register_kernel_spec("conv-bn-relu",
                     perturb=_conv_perturb,
                     build=_conv_module,
                     neighbours=lambda c: ([True] * (1 + c.get("n_add", 0)), [True]),
                     flops=_conv_flops,
                     max_flops=4.0e9,
                     weight=12.0,
                     doc="Conv2d + BatchNorm + relu/relu6/hswish/none, grouped or dense, "
                         "with 0-2 fused residual adds",
                     for_rules=lambda rules: {"prior": _conv_prior_for(rules),
                                              "variants": _act_variants(rules, "conv")})
register_kernel_spec("dwconv-bn-relu",
                     perturb=_dwconv_perturb,
                     build=_dwconv_module,
                     neighbours=_all(1, 1),
                     weight=6.0,
                     flops=lambda c: 2.0 * (c["hw"] / c["s"]) ** 2 * c["c"] * c["k"] ** 2,
                     doc="depthwise Conv2d + BatchNorm + activation",
                     for_rules=lambda rules: {"prior": _dwconv_prior_for(rules),
                                              "variants": _act_variants(rules, "dwconv")})
register_kernel_spec("fc",
                     prior=_fc_prior,
                     perturb=_fc_perturb,
                     build=_fc_module,
                     neighbours=_all(1, 1, False, False),
                     flops=lambda c: 2.0 * c["cin"] * c["cout"],
                     max_flops=2.1e8,
                     weight=1.5,
                     cold_weights=True,
                     doc="Linear (+ReLU) on a (1, cin) input")
register_kernel_spec("maxpool",
                     prior=_pool_prior("maxpool"),
                     perturb=_pool_perturb,
                     build=_pool_module("maxpool"),
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=1.5,
                     doc="MaxPool2d, 3x3 or 2x2, stride 1 or 2")
register_kernel_spec("avgpool",
                     prior=_pool_prior("avgpool"),
                     perturb=_pool_perturb,
                     build=_pool_module("avgpool"),
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=1.5,
                     doc="AvgPool2d, 3x3, 2x2 or 1x1, stride 1 or 2")
register_kernel_spec("global-avgpool",
                     prior=_hwc_prior(1, 112),
                     perturb=_hwc_perturb,
                     build=_gap_module,
                     neighbours=_all(1, 1, True, False),
                     flops=_hwc_flops,
                     weight=1.0,
                     doc="global average pooling + flatten (feeds a classifier)")
register_kernel_spec("relu",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_relu_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=1.0,
                     doc="ReLU on a feature map")
register_kernel_spec("bn",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_bn_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=0.6,
                     doc="BatchNorm2d alone (not fused into a convolution)")
register_kernel_spec("bnrelu",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_bnrelu_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=1.0,
                     doc="BatchNorm2d + ReLU (not fused into a convolution)")
register_kernel_spec("hswish",
                     prior=_hswish_prior,
                     perturb=_hwc_perturb,
                     build=_hswish_module,
                     neighbours=lambda c: ([c.get("rank", 4) == 4], [c.get("rank", 4) == 4]),
                     flops=_hwc_flops,
                     weight=0.6,
                     doc="h-swish on a feature map or a (1, c) vector")
register_kernel_spec("add",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_add_module(False),
                     neighbours=_all(2, 1),
                     flops=_hwc_flops,
                     weight=0.6,
                     doc="element-wise addition of two feature maps")
register_kernel_spec("addrelu",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_add_module(True),
                     neighbours=_all(2, 1),
                     flops=_hwc_flops,
                     weight=0.6,
                     doc="addition of two feature maps + ReLU")
register_kernel_spec("concat",
                     prior=_concat_prior,
                     perturb=_concat_perturb,
                     build=_concat_module,
                     neighbours=lambda c: ([not c.get("plain_first")]
                                           + [True] * (len(c["cs"]) - 1),
                                           [not c.get("plain_first")]),
                     flops=lambda c: float(c["hw"] ** 2 * sum(c["cs"])),
                     weight=1.5,
                     doc="channel concat; ShuffleNet-style ones read one input from a split")
register_kernel_spec("split",
                     prior=_even_prior,
                     perturb=_hwc_perturb,
                     build=_split_module,
                     neighbours=lambda c: ([False], [False, True]),
                     flops=_hwc_flops,
                     weight=0.8,
                     doc="chunk(2, dim=1): one half goes to a concat, the other to a conv")
register_kernel_spec("channelshuffle",
                     prior=_even_prior,
                     perturb=_hwc_perturb,
                     build=_shuffle5d_module,
                     neighbours=_all(1, 1, False, False),
                     flops=_hwc_flops,
                     weight=0.8,
                     doc="ShuffleNetV2 shuffle: reshape (5-D) -> transpose -> reshape")
register_kernel_spec("spos-shuffle",
                     prior=_even_prior,
                     perturb=_hwc_perturb,
                     build=_nni_shuffle_module,
                     neighbours=lambda c: ([False], [False, True]),
                     flops=_hwc_flops,
                     weight=1.0,
                     folds=("reshape", "transpose", "gather", "channelshuffle"),
                     doc="NNI ShuffleNetSpace shuffle: reshape (3-D) -> permute -> reshape (5-D)"
                         " -> two gathers; one half to a concat, the other to a conv")
register_kernel_spec("se",
                     prior=_se_prior,
                     perturb=_se_perturb,
                     build=_se_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=1.0,
                     doc="squeeze-excite: gap -> 1x1 conv -> relu -> 1x1 conv -> (h)sigmoid "
                         "-> mul")
register_kernel_spec("reshape",
                     prior=_flatten_prior,
                     perturb=_hwc_perturb,
                     build=_flatten_module,
                     neighbours=_all(1, 1, True, False),
                     flops=_hwc_flops,
                     weight=0.4,
                     doc="flatten before a classifier")
register_kernel_spec("mul",
                     prior=lambda r: {**_hwc_prior(7, 64)(r), "scalar": 1},
                     perturb=_hwc_perturb,
                     build=_mul_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=0.3,
                     doc="multiplication by a constant (NAS-Bench-201 cells cut off from "
                         "their input output zeros this way)")
register_kernel_spec("sigmoid",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_sigmoid_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=0.3,
                     doc="sigmoid on a feature map")
register_kernel_spec("pad",
                     prior=_hwc_prior(),
                     perturb=_hwc_perturb,
                     build=_pad_module,
                     neighbours=_all(1, 1),
                     flops=_hwc_flops,
                     weight=0.3,
                     doc="zero padding of a feature map's borders")
