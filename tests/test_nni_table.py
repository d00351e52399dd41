"""Latency lookup tables / LatencyProfiler against full predictions of frozen networks."""
from __future__ import annotations

import itertools
import json
import random
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nni")
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace  # noqa: E402
from nni.nas.profiler import Profiler  # noqa: E402

from nnmeter_nas.nni import LatencyProfiler, LatencyTable, find_choice_points  # noqa: E402
from nnmeter_nas.nni.errors import (SampleError, TableMismatchError,  # noqa: E402
                                    UnsupportedSpaceError)
from nnmeter_nas.search_spaces import SPOSSpace, spos_random_sample  # noqa: E402
from nnmeter_nas.testing import make_dummy_predictor  # noqa: E402
from test_nni_spaces import TinySpace, cbr  # noqa: E402

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
SHAPE = (1, 3, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(dummy_predictor):
    return dummy_predictor


@pytest.fixture(scope="module")
def tiny():
    return TinySpace()


@pytest.fixture(scope="module")
def tiny_profiler(tiny, predictor):
    return LatencyProfiler(tiny, predictor, SHAPE)


def _all_samples(space):
    labels = find_choice_points(space).label_values
    return [dict(zip(labels, c)) for c in itertools.product(*labels.values())]


def test_profiler_is_an_nni_profiler(tiny_profiler):
    assert isinstance(tiny_profiler, Profiler)
    assert tiny_profiler.devices == ["dummy"]
    assert tiny_profiler.input_shape == list(SHAPE)


def test_table_matches_full_prediction(tiny, tiny_profiler, predictor):
    samples = _all_samples(tiny)
    assert len(samples) == 3 * 3 * 8 * 2
    rng = random.Random(0)
    # the extremes plus random ones; Repeat depth, skip and width all vary
    picked = [s for s in samples if s["depth"] in (1, 3) and s["b1"] == "skip"][:2]
    picked += rng.sample(samples, 10)
    for s in picked:
        full = predictor.predict(tiny.freeze(s), input_shape=SHAPE)
        assert tiny_profiler.profile(s) == pytest.approx(full, rel=1e-9), s
    build = tiny_profiler.table.meta["build"]
    assert build["fixed_spread_ms"]["dummy"] == pytest.approx(0.0, abs=1e-12)
    assert build["max_entry_spread_ms"] == pytest.approx(0.0, abs=1e-12)


def test_table_entries_are_not_trivial(tiny_profiler):
    lats = {tiny_profiler.profile(s) for s in _all_samples(TinySpace())[:40]}
    assert len(lats) > 10  # the choices change the latency
    bd = tiny_profiler.breakdown({"b1": "skip", "depth": 1, "r0": "k5", "r1": "k3", "r2": "k3",
                                  "w": 16})
    assert bd["b1"] == 0.0  # Identity costs nothing
    assert bd["rep.blocks.1"] == 0.0 and bd["rep.blocks.2"] == 0.0  # beyond the depth
    assert bd["rep.blocks.0"] > 0 and bd["fixed"] > 0
    assert sum(bd.values()) == pytest.approx(
        tiny_profiler.profile({"b1": "skip", "depth": 1, "r0": "k5", "r1": "k3", "r2": "k3",
                               "w": 16}))


def test_json_round_trip(tmp_path, tiny, tiny_profiler):
    path = tiny_profiler.save(tmp_path / "tiny.json")
    data = json.loads(path.read_text())
    assert data["format"] == "nnmeter-nas-latency-table/1" and data["unit"] == "ms"
    assert data["devices"] == ["dummy"] and data["input_shape"] == list(SHAPE)
    point = next(p for p in data["points"] if p["name"] == "b1")
    assert point["input_shape"] == [1, 8, 16, 16]
    assert {tuple(e["values"].values()) for e in point["entries"]} == {("k3",), ("k5",),
                                                                       ("skip",)}
    loaded = LatencyProfiler.load(path, model_space=tiny, input_shape=SHAPE)
    for s in _all_samples(tiny)[::7]:
        assert loaded.profile(s) == tiny_profiler.profile(s)
    assert loaded.to_table() == tiny_profiler.to_table()
    assert LatencyTable.load(path).fingerprint == tiny_profiler.table.fingerprint


def test_bad_samples_raise_clear_errors(tiny_profiler):
    good = {"b1": "k3", "depth": 2, "r0": "k3", "r1": "k5", "r2": "k3", "w": 8}
    tiny_profiler.profile(good)
    with pytest.raises(SampleError, match=r"lacks labels \['w'\]"):
        tiny_profiler.profile({k: v for k, v in good.items() if k != "w"})
    with pytest.raises(SampleError, match="'extra'"):
        tiny_profiler.profile({**good, "extra": 1})
    with pytest.raises(SampleError, match="b1='k9'"):
        tiny_profiler.profile({**good, "b1": "k9"})
    with pytest.raises(SampleError, match="w=12"):
        tiny_profiler.profile({**good, "w": 12})


class OtherSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.b1 = LayerChoice({"k3": cbr(3, 8, 3), "k5": cbr(3, 8, 5)}, label="b1")

    def forward(self, x):
        return self.b1(x)


def test_table_for_another_space_input_or_device_is_refused(tmp_path, tiny_profiler):
    path = tiny_profiler.save(tmp_path / "tiny.json")
    with pytest.raises(TableMismatchError, match="OtherSpace"):
        LatencyProfiler.load(path, model_space=OtherSpace())
    with pytest.raises(TableMismatchError, match="input shape"):
        LatencyProfiler.load(path, model_space=TinySpace(), input_shape=(1, 3, 32, 32))
    with pytest.raises(TableMismatchError, match="'pixel4'"):
        LatencyProfiler.load(path, device="pixel4")
    with pytest.raises(TableMismatchError, match="'pixel4'"):
        tiny_profiler.profile({"b1": "k3", "depth": 1, "r0": "k3", "r1": "k3", "r2": "k3",
                               "w": 8}, device="pixel4")
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    with pytest.raises(TableMismatchError, match="not a latency table"):
        LatencyTable.load(tmp_path / "junk.json")


class WidthSpace(ModelSpace):
    """One choice point whose layers' width is a constructor argument (as a width multiplier
    is): the labels and choice points do not depend on it."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.b1 = LayerChoice({"k3": cbr(3, width, 3), "k5": cbr(3, width, 5)}, label="b1")

    def forward(self, x):
        return self.b1(x)


def test_table_for_the_same_space_with_other_layer_sizes_is_refused(tmp_path, predictor):
    """A table keeps a digest of the space's parameter shapes: the same class, labels and
    choice points built four times wider is refused (its latencies would be the narrow
    space's), the same width loads, and a table saved before the digest existed still loads."""
    path = LatencyProfiler(WidthSpace(8), predictor, SHAPE).save(tmp_path / "w8.json")
    with pytest.raises(TableMismatchError, match="other sizes"):
        LatencyProfiler.load(path, model_space=WidthSpace(32))
    LatencyProfiler.load(path, model_space=WidthSpace(8))
    data = json.loads(path.read_text())
    assert data["space"].pop("weights")
    (tmp_path / "old.json").write_text(json.dumps(data))
    LatencyProfiler.load(tmp_path / "old.json", model_space=WidthSpace(32))


def test_input_shape_that_does_not_fit(predictor):
    with pytest.raises(UnsupportedSpaceError, match=r"input shape \(1, 4, 16, 16\)"):
        LatencyProfiler(OtherSpace(), predictor, (1, 4, 16, 16))
    from nnmeter_nas.errors import SpaceSpecError

    with pytest.raises(SpaceSpecError, match="input_shape"):
        LatencyProfiler(OtherSpace(), predictor)  # the space does not say its input shape


def test_several_devices_share_one_traversal(tmp_path, tiny, tiny_profiler):
    other = make_dummy_predictor("dummy2", directory=tmp_path)
    both = LatencyProfiler(tiny, [make_dummy_predictor(), other], SHAPE)
    assert both.devices == ["dummy", "dummy2"]
    assert both.table.meta["build"]["covering_samples"] == \
        tiny_profiler.table.meta["build"]["covering_samples"]
    s = {"b1": "k5", "depth": 3, "r0": "k3", "r1": "k5", "r2": "k3", "w": 16}
    lat = both.profile_all(s)
    assert lat["dummy"] == pytest.approx(tiny_profiler.profile(s))
    assert lat["dummy2"] == pytest.approx(lat["dummy"])  # same synthetic regressors
    assert both.profile(s, "dummy2") == lat["dummy2"]


@pytest.mark.slow
def test_spos_table_matches_full_prediction(predictor):
    space = SPOSSpace(small_input=True)
    prof = LatencyProfiler(space, predictor)  # input shape from the space
    assert prof.input_shape == [1, 3, 32, 32]
    assert prof.table.meta["build"]["covering_samples"] == 4
    for seed in (1,):
        s = spos_random_sample(seed)
        full = predictor.predict(space.freeze(s), input_shape=(1, 3, 32, 32))
        assert prof.profile(s) == pytest.approx(full, rel=1e-9)
    # each choice block's entries differ: k7 costs more than k3 in every block
    for p in prof.table.points:
        row = {c[0]: ms[0] for c, ms in zip(p.combos, p.ms)}
        assert row["k7"] > row["k3"] > 0


def test_space_with_its_own_freeze_layout_is_refused_and_direct_profiler_works(predictor):
    from nnmeter_nas.nni import DirectLatencyProfiler, LatencyFilter
    from nnmeter_nas.search_spaces import NasBench201Space, arch_str_to_sample

    space = NasBench201Space(C=8, N=1)
    with pytest.raises(UnsupportedSpaceError, match="DirectLatencyProfiler"):
        LatencyProfiler(space, predictor, (1, 3, 32, 32))
    direct = DirectLatencyProfiler(space, predictor, (1, 3, 32, 32))
    s = arch_str_to_sample("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|"
                           "none~1|nor_conv_1x1~2|")
    full = predictor.predict(space.freeze(s), input_shape=(1, 3, 32, 32))
    assert direct.profile(s) == pytest.approx(full)
    assert direct.profile_all(s) == {"dummy": pytest.approx(full)}  # cached
    assert LatencyFilter(full * 1.01, direct)(s) and not LatencyFilter(full * 0.99, direct)(s)
    with pytest.raises(SampleError, match="lacks labels"):
        direct.profile({"cell/0_1": "none"})


class FusedAcrossBoundary(ModelSpace):
    """A LayerChoice of a conv or a skip, followed by a fixed ReLU: the ReLU fuses into the conv's
    kernel (conv-relu) in some architectures and runs alone in the others."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(cbr(3, 8, 3), torch.nn.MaxPool2d(3, 1, 1))
        self.b1 = LayerChoice({"conv": torch.nn.Conv2d(8, 8, 3, padding=1), "skip":
                               torch.nn.Identity()}, label="b1")
        self.act = torch.nn.ReLU()
        self.b2 = LayerChoice({"k3": cbr(8, 8, 3), "k5": cbr(8, 8, 5)}, label="b2")

    def forward(self, x):
        return self.b2(self.act(self.b1(self.stem(x))))


def test_kernel_fused_across_a_choice_boundary_is_charged_to_the_choice(predictor):
    space = FusedAcrossBoundary()
    prof = LatencyProfiler(space, predictor, SHAPE)
    build = prof.table.meta["build"]
    assert any(set(b["owners"]) == {"fixed", "b1"} for b in build["boundary_kernels"])
    assert build["reattributed_fixed_kernels"] >= 1
    assert build["fixed_spread_ms"]["dummy"] == pytest.approx(0.0, abs=1e-12)
    for s in _all_samples(space):
        full = predictor.predict(space.freeze(s), input_shape=SHAPE)
        assert prof.profile(s) == pytest.approx(full, rel=1e-9), s
    relu_alone = prof.breakdown({"b1": "skip", "b2": "k3"})["b1"]
    assert relu_alone > 0  # the ReLU's own kernel, charged to the skip


def test_network_overhead_goes_into_the_fixed_part(tmp_path, tiny):
    """A package's per-network constant (e.g. the fitted VPU overhead) is in every profile."""
    import json as _json

    from nnmeter_nas.packages.format import PredictorPackage
    from nnmeter_nas.predictor import LatencyPredictor

    base = make_dummy_predictor(directory=tmp_path)
    manifest_path = base.package.path / "manifest.json"
    m = _json.loads(manifest_path.read_text())
    m["network_overhead_ms"] = 0.5
    manifest_path.write_text(_json.dumps(m))
    with_overhead = LatencyPredictor(PredictorPackage.load(base.package.path))
    prof = LatencyProfiler(tiny, with_overhead, SHAPE)
    plain = LatencyProfiler(tiny, base, SHAPE)
    s = _all_samples(tiny)[5]
    full = with_overhead.predict(tiny.freeze(s), input_shape=SHAPE)
    assert prof.profile(s) == pytest.approx(full, rel=1e-9)
    assert prof.profile(s) == pytest.approx(plain.profile(s) + 0.5, rel=1e-9)


# ---------------------------------------------------------------------------- ops nothing prices
class _ActSpace(ModelSpace):
    """A conv followed by a choice of activation; ELU has no regressor in any test package."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = LayerChoice({"relu": torch.nn.ReLU(), "elu": torch.nn.ELU()}, label="act")
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.act(self.conv(x)))


def test_a_choice_the_predictor_cannot_price_is_refused_naming_it(predictor):
    from nnmeter_nas.errors import MissingRegressorError

    with pytest.raises(MissingRegressorError) as info:
        LatencyProfiler(_ActSpace(), predictor, SHAPE)
    msg = str(info.value)
    # the kernel, its ONNX op, the module and the choice that holds it, and what to do
    for part in ("'elu' (Elu)", "module 'act'", "LayerChoice 'act': act='elu'", "dummy",
                 "Use a predictor that covers", "allow_missing=True"):
        assert part in msg, (part, msg)
    assert "relu" not in msg.replace("'elu'", "")  # the priced candidate is not blamed


def test_allow_missing_counts_the_kernel_as_zero_with_a_warning(predictor):
    from nnmeter_nas.errors import MissingRegressorError
    from nnmeter_nas.predictor import LatencyWarning

    with pytest.warns(LatencyWarning, match=r"module 'act'.*'elu' \(Elu\).*allow_missing"):
        prof = LatencyProfiler(_ActSpace(), predictor, SHAPE, allow_missing=True)
    assert prof.breakdown({"act": "elu"})["act"] == 0.0  # the 0 ms it warned of
    strict = make_dummy_predictor(strict=True)
    with pytest.raises(MissingRegressorError, match="module 'act'"):
        LatencyProfiler(_ActSpace(), strict, SHAPE, allow_missing=True)


def test_an_op_the_engine_cannot_read_is_refused_naming_its_module(predictor):
    from nnmeter_nas.errors import UnsupportedOpError

    class RnnSpace(ModelSpace):
        def __init__(self):
            super().__init__()
            self.conv = LayerChoice({"k1": torch.nn.Conv2d(3, 4, 1),
                                     "k3": torch.nn.Conv2d(3, 4, 3, padding=1)}, label="conv")
            self.rnn = torch.nn.GRU(16, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(self.conv(x).mean(2))[0]

    with pytest.raises(UnsupportedOpError) as info:
        LatencyProfiler(RnnSpace(), predictor, SHAPE)
    msg = str(info.value)
    for part in ("RnnSpace", "'GRU'", "module 'rnn' (fixed part)", "Replace that module"):
        assert part in msg, (part, msg)
    assert info.value.op == "GRU"


# ---------------------------------------------------------------------------- dropped branches
class _BranchSpace(ModelSpace):
    """Two branches computed outside an InputChoice that keeps one: the export drops the other
    branch, so the branches' cost is the choice's (and a LayerChoice varies the layout too)."""

    def __init__(self, n_choices=1):
        super().__init__()
        self.stem = LayerChoice({"k1": cbr(3, 8, 1), "k3": cbr(3, 8, 3)}, label="stem")
        self.branches = torch.nn.ModuleList()
        self.picks = torch.nn.ModuleList()
        for j in range(n_choices):
            self.branches.append(torch.nn.ModuleList([cbr(8, 8, 3), cbr(8, 8, 1)]))
            self.picks.append(InputChoice(2, 1, label=f"pick{j}"))
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.stem(x)
        for (a, b), pick in zip(self.branches, self.picks):
            x = pick([a(x), b(x)])
        return self.pool(x)


def test_branches_an_input_choice_drops_are_charged_to_it(predictor):
    """The fixed part used to take the median of the branches' cost, so the table was off by
    the difference of the two branches for every architecture picking the cheaper one."""
    space = _BranchSpace()
    prof = LatencyProfiler(space, predictor, SHAPE)
    for s in _all_samples(space):
        full = predictor.predict(space.freeze(s), input_shape=SHAPE)
        assert prof.profile(s) == pytest.approx(full, rel=1e-9), s
    build = prof.table.meta["build"]
    assert build["dropped_branch_kernels"] >= 2
    assert build["fixed_spread_ms"]["dummy"] == pytest.approx(0.0, abs=1e-12)
    assert prof.breakdown({"stem": "k1", "pick0": [0]})["picks.0"] > \
        prof.breakdown({"stem": "k1", "pick0": [1]})["picks.0"] > 0  # 3x3 branch over 1x1


def test_branches_no_single_input_choice_explains_are_named_in_the_warning(predictor):
    """Two InputChoices whose values the covering architectures change together: which one
    drops a branch cannot be told apart, so the branches stay fixed and the warning names them
    and says what to do."""
    with pytest.warns(RuntimeWarning, match=r"only some architectures run.*branches\.0\.0"
                                            r".*DirectLatencyProfiler"):
        prof = LatencyProfiler(_BranchSpace(n_choices=2), predictor, SHAPE)
    assert "branches.1.1.0" in prof.table.meta["build"]["modules_in_some_architectures_only"]
