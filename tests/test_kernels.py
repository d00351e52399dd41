import json

import pytest
import torch
from torch import nn

from nnmeter_nas.errors import PackageError
from nnmeter_nas.features import extract_features, regressor_name
from nnmeter_nas.graph import load_graph
from nnmeter_nas.kernels import FusionRules, detect_kernels


class SE(nn.Module):
    def __init__(self, c, gate=None):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.a = nn.Conv2d(c, c // 4, 1)
        self.r = nn.ReLU()
        self.b = nn.Conv2d(c // 4, c, 1)
        self.g = gate or nn.Hardsigmoid()

    def forward(self, x):
        return x * self.g(self.b(self.r(self.a(self.pool(x)))))


class ManualHswish(nn.Module):
    def forward(self, x):
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


class Shuffle(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def kernels_of(net, shape=(1, 16, 16, 16), rules=None):
    return detect_kernels(load_graph(net, input_shape=shape), rules)


def test_conv_bn_relu_fusion_with_default_rules():
    net = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU())
    ks = kernels_of(net)
    assert [k.type for k in ks] == ["conv-relu", "dwconv-relu"]
    assert regressor_name(ks[0].type) == "conv-bn-relu"
    assert regressor_name(ks[1].type) == "dwconv-bn-relu"


def test_rules_decide_fusion():
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
    no_fuse = FusionRules({"BF_conv_relu": {"obey": False}})
    assert [k.type for k in kernels_of(net, rules=no_fuse)] == ["conv", "relu"]
    fuse = FusionRules({"BF_conv_relu": {"obey": True}})
    assert [k.type for k in kernels_of(net, rules=fuse)] == ["conv-relu"]


def test_multiple_consumers_block_fusion_unless_mon():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(16, 16, 1)

        def forward(self, x):
            y = self.c(x)
            return torch.relu(y) + torch.sigmoid(y)

    rules = FusionRules({"BF_conv_relu": {"obey": True}})
    assert "conv" in [k.type for k in kernels_of(Branch(), rules=rules)]
    mon = FusionRules({"BF_conv_relu": {"obey": True}, "MON": {"obey": 1}})
    assert "conv-relu" in [k.type for k in kernels_of(Branch(), rules=mon)]


def test_chain_rule_fuses_block():
    net = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU(), nn.MaxPool2d(2))
    rules = FusionRules({"BF_conv_relu_maxpool": {"obey": True}})
    assert [k.type for k in kernels_of(net, rules=rules)] == ["conv-relu-maxpool"]


@pytest.mark.parametrize("act", [nn.Hardswish(), ManualHswish()])
def test_hswish_block(act):
    ks = kernels_of(nn.Sequential(nn.Conv2d(16, 16, 1), act))
    assert [k.type for k in ks] == ["conv", "hswish"]
    assert extract_features(ks[1]) == [16, 16]


@pytest.mark.parametrize("gate", [nn.Hardsigmoid(), nn.Sigmoid()])
def test_se_block(gate):
    ks = kernels_of(SE(16, gate))
    assert [k.type for k in ks] == ["se"]
    assert extract_features(ks[0], "nnmeter-2.0") == [16, 16]


def test_channelshuffle_split_concat_and_gap():
    class Block(nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            return Shuffle()(torch.cat([a, torch.relu(b)], 1))

    net = nn.Sequential(Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    ks = kernels_of(net)
    types = [k.type for k in ks]
    assert types == ["split", "relu", "concat", "channelshuffle", "gap", "fc"]
    gap = ks[4]
    assert extract_features(gap, "nnmeter-2.0") == [1, 16]  # nn-Meter's quirk, kept for parity
    assert extract_features(gap, "nnmeter-nas-1") == [16, 16]
    assert extract_features(ks[2]) == [16, 2, 8, 8, 0, 0]
    assert extract_features(ks[5]) == [16, 4, (2 * 16 + 1) * 4 / 2e6, (2 * 16 + 1) * 4 / 1e6]


def test_conv_features_match_nnmeter_formula():
    ks = kernels_of(nn.Sequential(nn.Conv2d(16, 24, 5, stride=2, padding=2)))
    hw, cin, cout, k, s = 16, 16, 24, 5, 2
    params = cout * (k * k * cin + 1)
    flops = 2 * hw / s * hw / s * params
    assert extract_features(ks[0]) == [hw, cin, cout, k, s, flops / 2e6, params / 1e6]
    dw = kernels_of(nn.Sequential(nn.Conv2d(16, 16, 3, groups=16, padding=1)))[0]
    p = 16 * (9 + 1)
    assert extract_features(dw) == [16, 16, 16, 3, 1, 2 * 16 * 16 * p / 2e6, p / 1e6]


def test_non_square_inputs_count_every_pixel():
    # nn-Meter's hw is the height: a 16x64 map was featurised (and priced) as 16x16, and
    # 64x16 as 64x64. The fixed feature sets use the side of a square of the same area.
    block = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), SE(24),
                          nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    feats = {}
    for shape in [(1, 16, 16, 64), (1, 16, 64, 16), (1, 16, 32, 32)]:
        ks = kernels_of(block, shape)
        feats[shape[2:]] = {fs: [(k.type, extract_features(k, fs)) for k in ks]
                            for fs in ("nnmeter-2.0", "nnmeter-nas-1", "nnmeter-nas-3")}
    for fs in ("nnmeter-nas-1", "nnmeter-nas-3"):
        assert feats[(16, 64)][fs] == feats[(64, 16)][fs] == feats[(32, 32)][fs]
    conv = feats[(16, 64)]["nnmeter-2.0"][0][1]
    assert conv[0] == 16  # nn-Meter's own features are kept for its packages
    from nnmeter_nas import load_predictor

    p = load_predictor("cortexA76cpu_tflite21")
    ms = [p.predict(block, input_shape=(1, 16, h, w)) for h, w in [(32, 32), (32, 64), (64, 32)]]
    assert ms[0] < ms[1] == ms[2]


def test_grouped_conv_features_differ_only_in_native_set():
    k = kernels_of(nn.Sequential(nn.Conv2d(16, 16, 3, groups=4, padding=1)))[0]
    compat, native = extract_features(k, "nnmeter-2.0"), extract_features(k, "nnmeter-nas-1")
    assert compat[:5] == native[:5] and native[6] < compat[6]
    with pytest.raises(ValueError, match="feature set"):
        extract_features(k, "nope")


def test_concat_of_many_inputs():
    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([torch.relu(x + i) for i in range(5)], 1)

    ks = kernels_of(Cat(), rules=FusionRules({}))
    cat = [k for k in ks if k.type == "concat"][0]
    assert extract_features(cat, "nnmeter-2.0") == [16, 6, 16, 16, 16, 16]
    assert extract_features(cat, "nnmeter-nas-1") == [16, 5, 16, 16, 16, 16]


def test_kernel_links_follow_graph():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c(x) + x)

    ks = kernels_of(nn.Sequential(nn.Conv2d(16, 16, 1), Res()))
    assert [k.type for k in ks] == ["conv", "conv", "add-relu"]
    assert ks[2].inputs == [ks[0].name, ks[1].name] or set(ks[2].inputs) == {ks[0].name,
                                                                            ks[1].name}


def test_rules_file_errors(tmp_path):
    p = tmp_path / "fusion_rules.json"
    p.write_text("[1, 2]")
    with pytest.raises(PackageError, match="JSON object"):
        FusionRules.from_file(p)
    p.write_text(json.dumps({"BF_conv_relu": {"latency": 1}}))
    with pytest.raises(PackageError, match="obey"):
        FusionRules.from_file(p)
    with pytest.raises(PackageError, match="not found"):
        FusionRules.from_file(tmp_path / "missing.json")
