"""LatencyFilter as a plain callable, as NNI middleware in real experiments, and in RandomOneShot."""
from __future__ import annotations

import logging
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nni")
import nni  # noqa: E402
import torch.nn as nn  # noqa: E402
from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402
from nni.nas.nn.pytorch import LayerChoice, ModelSpace  # noqa: E402
from nni.nas.strategy import Random, RegularizedEvolution  # noqa: E402
from nni.nas.strategy.middleware import Chain  # noqa: E402

from nnmeter_nas.nni import LatencyFilter, LatencyProfiler  # noqa: E402
from nnmeter_nas.nni.errors import SampleError  # noqa: E402
from test_nni_spaces import TinySpace, cbr  # noqa: E402

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
SHAPE = (1, 3, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return TinySpace()


@pytest.fixture(scope="module")
def profiler(tiny, dummy_predictor):
    return LatencyProfiler(tiny, dummy_predictor, SHAPE)


def _midpoint(profiler) -> float:
    lo, hi = profiler.table.bounds()
    return (lo + hi) / 2


FAST = {"b1": "skip", "depth": 1, "r0": "k3", "r1": "k3", "r2": "k3", "w": 8}
SLOW = {"b1": "k5", "depth": 3, "r0": "k5", "r1": "k5", "r2": "k5", "w": 16}


# ---------------------------------------------------------------------------- plain callable
def test_plain_callable_on_samples(profiler):
    budget = _midpoint(profiler)
    f = LatencyFilter(budget, profiler)
    assert f(FAST) is True
    assert f(SLOW) is False
    assert (f.n_checked, f.n_rejected) == (2, 1)
    assert "rejected 1 of 2" in f.summary()
    band = LatencyFilter(None, profiler, min_ms=budget)
    assert band(FAST) is False and band(SLOW) is True
    with pytest.raises(SampleError, match="lacks labels"):
        f({"b1": "k3"})


def test_several_devices_must_all_meet_the_budget():
    lat = {"fast_dev": 1.0, "slow_dev": 10.0}
    f = LatencyFilter({"fast_dev": 5.0, "slow_dev": 20.0}, lambda s: lat)
    assert f({}) is True
    f2 = LatencyFilter({"fast_dev": 5.0, "slow_dev": 8.0}, lambda s: lat)
    assert f2({}) is False  # slow_dev misses its budget
    f3 = LatencyFilter(5.0, lambda s: lat)  # one number for every device
    assert f3({}) is False
    f4 = LatencyFilter(5.0, lambda s: lat, devices=["fast_dev"])
    assert f4({}) is True
    with pytest.raises(KeyError, match="'pixel4'"):
        LatencyFilter({"pixel4": 5.0}, lambda s: lat)({})
    assert LatencyFilter(3.0, lambda s: 2.0)({}) is True  # a callable returning one number


def test_needs_a_bound_and_a_predictor(profiler):
    from nnmeter_nas.errors import LatencyBudgetError

    with pytest.raises(LatencyBudgetError, match="max_ms, min_ms"):
        LatencyFilter(None, profiler)
    with pytest.raises(ValueError, match="predictor="):
        LatencyFilter(1.0)


def test_the_budget_is_said_in_words(profiler):
    """The summary and the stop message used to print the bounds as "[None, {'dummy': 0.4}]
    ms"."""
    f = LatencyFilter({"dummy": 0.25}, profiler, min_ms={"dummy": 0.125})
    f(FAST)
    text = f.summary()
    assert text.endswith("outside the budget (dummy latency >= 0.125 ms, dummy latency <= "
                         "0.25 ms)"), text
    assert "None" not in text and "{" not in text
    assert LatencyFilter(10.0, profiler).budget_text() == "latency <= 10 ms"


# ---------------------------------------------------------------------------- NNI experiments
def _run(space, strategy, trials, tmp_path, record, model_format="raw"):
    def evaluate(model):
        record.append(model)
        nni.report_final_result(float(sum(p.numel() for p in model.parameters())))

    exp = NasExperiment(space, FunctionalEvaluator(evaluate), strategy,
                        NasExperimentConfig("sequential", model_format))
    exp.config.max_trial_number = trials
    exp.config.experiment_working_directory = str(tmp_path)
    try:
        exp.run()
    finally:
        exp.stop()
    return exp


@pytest.mark.parametrize("make_strategy", [
    lambda: Random(seed=1),
    lambda: RegularizedEvolution(population_size=4, sample_size=2, seed=1),
], ids=["Random", "RegularizedEvolution"])
def test_middleware_in_experiment_keeps_trained_models_under_budget(
        make_strategy, tiny, profiler, dummy_predictor, tmp_path):
    budget = _midpoint(profiler)
    f = LatencyFilter(budget, profiler)
    trained = []
    _run(tiny, Chain(make_strategy(), f), 8, tmp_path, trained)
    assert len(trained) == 8
    for model in trained:  # the full prediction of the network NNI trained
        assert dummy_predictor.predict(model, input_shape=SHAPE) <= budget * (1 + 1e-9)
    assert f.n_rejected > 0 and f.n_checked == f.n_rejected + 8


def test_middleware_builds_its_table_from_the_experiment_space(tiny, dummy_predictor, tmp_path,
                                                               profiler):
    f = LatencyFilter(_midpoint(profiler), predictor=dummy_predictor, input_shape=SHAPE)
    assert f.profiler is None
    trained = []
    _run(tiny, Chain(Random(seed=2), f), 3, tmp_path, trained)
    assert f.profiler is not None and f.profiler.devices == ["dummy"]
    assert len(trained) == 3


def test_middleware_builds_its_table_in_nni_default_simplified_format(tiny, dummy_predictor,
                                                                      tmp_path, profiler):
    """NNI's default model format hands middleware a SimplifiedModelSpace, which keeps only a
    traced recipe of the space: the filter rebuilds the space from it (it used to refuse it as
    'not an NNI model space')."""
    budget = _midpoint(profiler)
    f = LatencyFilter(budget, predictor=dummy_predictor, input_shape=SHAPE)
    trained = []
    _run(tiny, Chain(Random(seed=2), f), 3, tmp_path, trained, model_format="simplified")
    assert f.profiler is not None and f.profiler.table.labels == profiler.table.labels
    assert len(trained) == 3
    for model in trained:
        assert dummy_predictor.predict(model, input_shape=SHAPE) <= budget * (1 + 1e-9)


@pytest.mark.parametrize("make_strategy", [
    lambda: Random(seed=3),
    lambda: RegularizedEvolution(population_size=4, sample_size=2, seed=3),
], ids=["Random", "RegularizedEvolution"])
def test_impossible_budget_stops_with_a_clear_message(make_strategy, tiny, profiler, tmp_path,
                                                       caplog):
    lo, _ = profiler.table.bounds()
    with caplog.at_level(logging.WARNING, logger="nnmeter_nas.nni.filter"):
        f = LatencyFilter(lo * 0.5, profiler, patience=15)
        trained = []
        _run(tiny, Chain(make_strategy(), f), 50, tmp_path, trained)
    assert trained == []
    assert f.n_rejected == 15
    text = caplog.text
    assert "below the fastest architecture" in text
    assert "15 architectures in a row missed the latency budget (latency <= " in text
    assert "stopping the search" in text


# ---------------------------------------------------------------------------- RandomOneShot
class LCSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8, 3)
        self.blocks = nn.Sequential(*[
            LayerChoice({"k3": cbr(8, 8, 3), "k5": cbr(8, 8, 5), "k7": cbr(8, 8, 7)},
                        label=f"b{i}") for i in range(3)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_random_one_shot_filter(dummy_predictor, tmp_path):
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.strategy import RandomOneShot
    from torch.utils.data import TensorDataset

    space = LCSpace()
    prof = LatencyProfiler(space, dummy_predictor, SHAPE)
    budget = _midpoint(prof)
    f = LatencyFilter(budget, prof)
    seen = []
    original = f.accept

    def spy(sample):
        ok = original(sample)
        seen.append((dict(sample), ok))
        return ok

    f.accept = spy
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 16, 16, generator=g),
                         torch.randint(0, 10, (16,), generator=g))
    evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=4),
                               val_dataloaders=DataLoader(data, batch_size=4), max_epochs=1,
                               num_classes=10, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False,
                               export_onnx=False)
    strategy = RandomOneShot(filter=f)
    exp = NasExperiment(space, evaluator, strategy)
    exp.config.experiment_working_directory = str(tmp_path)
    try:
        exp.run()
    finally:
        exp.stop()
    assert len(seen) >= 8  # one or more draws per training and validation step
    assert any(not ok for _, ok in seen)  # some samples were over budget and redrawn
    for sample, ok in seen:
        assert set(sample) == {"b0", "b1", "b2"}
        assert ok == (prof.profile(sample) <= budget)
