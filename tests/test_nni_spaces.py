"""SPOS search space, choice-point enumeration, covering samples and the fast freezer."""
from __future__ import annotations

import itertools
import random
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nni")
import nni  # noqa: E402
import torch.nn as nn  # noqa: E402
from nni.nas.nn.pytorch import (LayerChoice, ModelSpace, MutableConv2d, Repeat)  # noqa: E402

from nnmeter_nas.nni import SpaceFreezer, covering_samples, find_choice_points  # noqa: E402
from nnmeter_nas.nni.errors import UnsupportedSpaceError  # noqa: E402
from nnmeter_nas.search_spaces import (SPOS_LABELS, SPOS_PUBLISHED_ARCH, SPOS_VALUES,  # noqa: E402
                                       SPOSSpace, spos_published_model, spos_random_sample)
from nnmeter_nas.search_spaces.spos import check_spos_sample  # noqa: E402

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cbr(cin: int, cout: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TinySpace(ModelSpace):
    """A LayerChoice with a skip, a Repeat of LayerChoices with a mutable depth, and a width
    choice shared by two MutableConv2d."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8, 3)
        self.b1 = LayerChoice({"k3": cbr(8, 8, 3), "k5": cbr(8, 8, 5), "skip": nn.Identity()},
                              label="b1")
        self.rep = Repeat(lambda i: LayerChoice({"k3": cbr(8, 8, 3), "k5": cbr(8, 8, 5)},
                                                label=f"r{i}"), depth=(1, 3), label="depth")
        w = nni.choice("w", [8, 16])
        self.wide = nn.Sequential(MutableConv2d(8, w, 1, bias=False), nn.ReLU(),
                                  MutableConv2d(w, 8, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.wide(self.rep(self.b1(self.stem(x)))))


# ---------------------------------------------------------------------------- SPOS
def test_spos_space_labels_and_values():
    space = SPOSSpace(small_input=True)
    simplified = space.simplify()
    assert list(simplified) == list(SPOS_LABELS)
    for label in SPOS_LABELS:
        assert list(simplified[label].values) == list(SPOS_VALUES)
    assert space.input_shape == (1, 3, 32, 32)
    assert SPOSSpace().input_shape == (1, 3, 224, 224)


def test_spos_small_input_runs_and_keeps_2x2_maps():
    space = SPOSSpace(small_input=True)
    net = space.freeze(spos_random_sample(0)).eval()
    seen = {}

    def hook(_module, args):
        seen["x"] = args[0].shape

    net.conv_last.register_forward_pre_hook(hook)
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert tuple(seen["x"][2:]) == (2, 2)
    assert net.first_conv[0].stride == (1, 1)


def test_spos_published_arch_is_nni_s():
    from nni.nas.hub.pytorch import ShuffleNetSpace

    ref = ShuffleNetSpace.load_searched_model("spos")
    mine = spos_published_model()
    assert mine.first_conv[0].stride == (2, 2)
    kinds = [type(b).__name__ + str(getattr(b, "kernel_size", "")) for b in mine.features]
    ref_kinds = [type(b).__name__ + str(getattr(b, "kernel_size", "")) for b in ref.features]
    assert kinds == ref_kinds
    assert set(SPOS_PUBLISHED_ARCH) == set(SPOS_LABELS)


def test_spos_random_sample_and_check():
    s = spos_random_sample(random.Random(3))
    check_spos_sample(s)
    assert spos_random_sample(3) == spos_random_sample(3)
    with pytest.raises(ValueError, match="layer_7"):
        check_spos_sample({k: v for k, v in s.items() if k != "layer_7"})
    with pytest.raises(ValueError, match="k9"):
        check_spos_sample({**s, "layer_2": "k9"})
    with pytest.raises(ValueError, match="layer_99"):
        check_spos_sample({**s, "layer_99": "k3"})


# ---------------------------------------------------------------------------- choice points
def test_spos_choice_points_and_covering():
    layout = find_choice_points(SPOSSpace(small_input=True))
    assert [p.name for p in layout.points] == [f"features.{i}" for i in range(20)]
    assert [p.labels for p in layout.points] == [(label,) for label in SPOS_LABELS]
    samples = covering_samples(layout)
    assert len(samples) == 4  # all-k3, all-k5, all-k7, all-xcep
    for v in SPOS_VALUES:
        assert any(all(s[label] == v for label in SPOS_LABELS) for s in samples)


def test_tiny_space_choice_points():
    layout = find_choice_points(TinySpace())
    by_name = {p.name: p for p in layout.points}
    assert set(by_name) == {"b1", "rep.blocks.0", "rep.blocks.1", "rep.blocks.2", "wide.0",
                            "wide.2"}
    block2 = by_name["rep.blocks.2"]
    assert block2.frozen_path == "rep.2" and block2.labels == ("depth", "r2")
    # block 2 exists only at depth 3
    inactive = {block2.combos[k] for k in block2.inactive}
    assert inactive == {(d, v) for d in (1, 2) for v in ("k3", "k5")}
    assert by_name["wide.0"].labels == ("w",) and by_name["wide.2"].labels == ("w",)
    samples = covering_samples(layout)
    for p in layout.points:  # every active combination appears in some covering sample
        needed = {p.combos[k] for k in range(len(p.combos)) if k not in p.inactive}
        assert needed <= {p.combo_of(s) for s in samples}


def _onnx_ops(net: nn.Module, shape) -> list[tuple[str, str]]:
    from nnmeter_nas.graph.torch_export import export_onnx

    proto = export_onnx(net, shape)
    return [(n.op_type, n.name) for n in proto.graph.node]


def test_fast_freezer_exports_what_nni_freeze_exports():
    space = TinySpace()
    freezer = SpaceFreezer(space)
    labels = find_choice_points(space).label_values
    rng = random.Random(0)
    combos = list(itertools.product(*labels.values()))
    for combo in rng.sample(combos, 4):
        sample = dict(zip(labels, combo))
        assert _onnx_ops(freezer.freeze(sample), (1, 3, 8, 8)) == \
            _onnx_ops(space.freeze(sample), (1, 3, 8, 8))
    # the space is left untouched: still a space with its LayerChoice
    assert isinstance(space.b1, LayerChoice)


def _structure(net: nn.Module) -> list[tuple]:
    return [(path, type(m).__name__, getattr(m, "weight", torch.empty(0)).shape,
             getattr(m, "stride", None)) for path, m in net.named_modules() if path]


def test_fast_freezer_spos_matches_nni_freeze():
    space = SPOSSpace(small_input=True)
    sample = spos_random_sample(5)
    assert _structure(SpaceFreezer(space).freeze(sample)) == _structure(space.freeze(sample))


# ---------------------------------------------------------------------------- bad spaces
class NumericalSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.drop = LayerChoice([nn.Identity(), nn.Dropout(0.5)], label="d")
        self.lr = self.add_mutable(nni.uniform("lr", 0.0, 1.0))

    def forward(self, x):
        return self.drop(x)


class DanglingSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.act = self.add_mutable(nni.choice("act", ["relu", "sigmoid"]))

    def forward(self, x):
        return self.conv(x)


class HugeChoiceSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.rep = Repeat(lambda i: LayerChoice([nn.Identity(), nn.ReLU(), nn.Sigmoid()],
                                                label=f"op{i}"), depth=4)
        self.conv = MutableConv2d(3, nni.choice("c1", list(range(1, 40))),
                                  nni.choice("k", [1, 3, 5, 7, 9, 11, 13, 15]))

    def forward(self, x):
        return self.conv(self.rep(x))


def test_unsupported_spaces_name_the_culprit():
    with pytest.raises(UnsupportedSpaceError, match="'lr'.*not categorical"):
        find_choice_points(NumericalSpace())
    with pytest.raises(UnsupportedSpaceError, match=r"\['act'\]"):
        find_choice_points(DanglingSpace())
    with pytest.raises(UnsupportedSpaceError, match="MutableConv2d 'conv'.*312"):
        find_choice_points(HugeChoiceSpace())
    with pytest.raises(UnsupportedSpaceError, match="not an NNI model space"):
        find_choice_points(nn.Conv2d(3, 3, 1))
