"""Latency-aware NNI 3 strategies run in real NasExperiments (sequential engine, tabular evaluator)."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

pytest.importorskip("nni")

from nnmeter_nas.datasets.nb201 import DATA_ENV_VAR, NB201Table, default_data_dir  # noqa: E402
from nnmeter_nas.strategies.pareto import (  # noqa: E402
    crowding_distance, hypervolume_2d, non_dominated_sort, pareto_mask)
from nnmeter_nas.strategies.rewards import MnasNetReward  # noqa: E402

CPU, GPU = "cortexA76cpu_tflite21", "adreno640gpu_tflite21"

needs_data = pytest.mark.skipif(not (default_data_dir() / "architectures.csv").is_file(),
                                reason=f"NAS-Bench-201 data not found (set {DATA_ENV_VAR})")


# ----------------------------------------------------------------------------- pure helpers

def test_mnasnet_reward_uses_alpha_under_and_beta_over_target():
    r = MnasNetReward(alpha=-0.1, beta=-2.0)
    assert r(90.0, {"d": 5.0}, {"d": 10.0}) == pytest.approx(90.0 * 0.5 ** -0.1)
    assert r(90.0, {"d": 20.0}, {"d": 10.0}) == pytest.approx(90.0 * 2.0 ** -2.0)
    two = r(90.0, {"a": 5.0, "b": 20.0}, {"a": 10.0, "b": 10.0})
    assert two == pytest.approx(90.0 * 0.5 ** -0.1 * 2.0 ** -2.0)
    hard = MnasNetReward.hard()
    assert hard(90.0, {"d": 5.0}, {"d": 10.0}) == 90.0 and hard(90.0, {"d": 20.0}, {"d": 10.0}) == 45.0
    with pytest.raises(ValueError):
        MnasNetReward(alpha=float("nan"))


def test_pareto_helpers_match_brute_force():
    rng = np.random.default_rng(0)
    F = rng.integers(0, 8, size=(60, 2)).astype(float)
    fronts = non_dominated_sort(F)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(60))
    dominated_by = lambda i, j: np.all(F[j] <= F[i]) and np.any(F[j] < F[i])  # noqa: E731
    first = {i for i in range(60) if not any(dominated_by(i, j) for j in range(60))}
    assert set(fronts[0].tolist()) == first == set(np.flatnonzero(pareto_mask(F)).tolist())
    for r, front in enumerate(fronts[1:], start=1):  # every later point is dominated by the front before
        assert all(any(dominated_by(i, j) for j in fronts[r - 1]) for i in front)
    # hypervolume against counting unit cells on the integer grid
    ref = (8.0, 8.0)
    cells = sum(1 for x in range(8) for y in range(8) if any(F[k, 0] <= x and F[k, 1] <= y for k in range(60)))
    assert hypervolume_2d(F, ref) == pytest.approx(cells)
    assert hypervolume_2d(np.array([[9.0, 1.0]]), ref) == 0.0
    cd = crowding_distance(np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]]))
    assert np.isinf(cd[0]) and np.isinf(cd[3]) and cd[1] == pytest.approx(4 / 3)


# ----------------------------------------------------------------------------- experiments

@pytest.fixture(scope="module")
def nb201():
    if not (default_data_dir() / "architectures.csv").is_file():
        pytest.skip(f"NAS-Bench-201 data not found (set {DATA_ENV_VAR})")
    from nnmeter_nas.search_spaces import NasBench201Space
    from nnmeter_nas.nni.tabular import NB201Lookup

    table = NB201Table.load()
    cells, lat = table.latency_matrix()
    space = NasBench201Space(C=4, N=1, allowed_arch_strs=[c.arch_str for c in cells])
    lookup = NB201Lookup(table)
    from nnmeter_nas.errors import LatencySourceError

    with pytest.raises(LatencySourceError, match="'pixel4' has no measured latency"):
        NB201Lookup(table, devices=["pixel4"])
    p25 = {d: float(np.percentile(lat[:, i], 25)) for i, d in enumerate(table.devices)}
    return {"table": table, "space": space, "lookup": lookup, "p25": p25, "cells": cells, "lat": lat}


def _run(nb201, strategy, tmp_path, max_models=30, metric_fn=None):
    from nnmeter_nas.nni.experiment import evaluated_models, run_sequential_experiment
    from nnmeter_nas.nni.tabular import TabularEvaluator

    evaluator = TabularEvaluator(metric_fn or nb201["lookup"].accuracy)
    exp = run_sequential_experiment(nb201["space"], evaluator, strategy, max_models=max_models, workdir=tmp_path)
    return exp, evaluated_models(exp)


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_constrained_strategies_train_only_feasible_new_cells(nb201, tmp_path, name):
    from nnmeter_nas.search_spaces.nasbench201 import sample_to_arch_str
    from nnmeter_nas.strategies import ConstrainedEvolution, ConstrainedRandom

    budget = {CPU: nb201["p25"][CPU], GPU: nb201["p25"][GPU]}
    lookup = nb201["lookup"]
    strategy = ConstrainedRandom(lookup, budget, seed=3) if name == "random" else \
        ConstrainedEvolution(lookup, budget, population_size=8, sample_size=3, seed=3)
    exp, models = _run(nb201, strategy, tmp_path, max_models=30)
    assert len(models) == 30
    archs = [sample_to_arch_str(m.sample) for m in models]
    assert len(set(archs)) == 30
    for m, arch in zip(models, archs):
        lat = lookup(m.sample)
        assert lat[CPU] <= budget[CPU] and lat[GPU] <= budget[GPU]
        assert m.metric == nb201["table"].accuracy(arch)
    best = strategy.best_feasible()
    assert best.metric == max(m.metric for m in models)
    top = next(iter(exp.export_top_models(formatter="dict")))
    assert sample_to_arch_str(top) == sample_to_arch_str(best.sample)


def test_latency_aware_mutation_makes_feasible_one_edit_children(nb201, tmp_path):
    from nnmeter_nas.strategies import ConstrainedEvolution

    budget = {CPU: nb201["p25"][CPU]}
    strategy = ConstrainedEvolution(nb201["lookup"], budget, population_size=10, sample_size=3, seed=0)
    _, models = _run(nb201, strategy, tmp_path, max_models=40)
    one_edit = 0
    trials = strategy.trials
    for child in trials[10:]:
        assert child.latency[CPU] <= budget[CPU]
        one_edit += any(sum(child.sample[k] != p.sample[k] for k in child.sample) == 1 for p in trials[:trials.index(child)])
    assert one_edit >= 25  # nearly all children are one-edit mutations of an earlier architecture
    # no architecture over budget was handed to the engine, yet mutation did look at some
    assert strategy._num_candidates > len(models)


def test_budget_preference_leans_to_children_that_use_the_budget(nb201):
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import SimplifiedModelSpace
    from nnmeter_nas.search_spaces.nasbench201 import arch_str_to_sample
    from nnmeter_nas.strategies import ConstrainedEvolution, Trial

    lookup, budget = nb201["lookup"], {CPU: float(np.percentile(nb201["lat"][:, 0], 50))}
    exec_space = SimplifiedModelSpace.from_model(nb201["space"], None)

    def make(pref):
        strategy = ConstrainedEvolution(lookup, budget, budget_preference=pref, seed=0)
        strategy.initialize(exec_space, SequentialExecutionEngine())
        return strategy

    greedy, uniform = make(1e4), make(0.0)
    # a feasible parent with at least three feasible one-edit neighbours
    for cell in nb201["cells"]:
        parent = arch_str_to_sample(cell.arch_str)
        if lookup(parent)[CPU] > budget[CPU]:
            continue
        ok = [n for n in greedy.neighbours(parent) if greedy.is_valid(n) and lookup(n)[CPU] <= budget[CPU]]
        if len(ok) >= 3:
            break
    best_use = max(lookup(n)[CPU] for n in ok)
    trial = Trial(sample=parent, latency=lookup(parent))
    for _ in range(5):
        child, lat = greedy.mutate(trial)
        assert lat[CPU] == best_use
    picks = {tuple(sorted(uniform.mutate(trial)[0].items())) for _ in range(30)}
    assert len(picks) > 1 and all(lookup(dict(p))[CPU] <= budget[CPU] for p in picks)


def test_mnasnet_soft_reward_ranks_by_reward(nb201, tmp_path):
    from nnmeter_nas.strategies import ConstrainedEvolution

    budget = {CPU: nb201["p25"][CPU]}
    reward = MnasNetReward(-0.07, -0.5)
    strategy = ConstrainedEvolution(nb201["lookup"], budget, population_size=8, sample_size=3, seed=1, reward=reward)
    _, models = _run(nb201, strategy, tmp_path, max_models=30)
    assert len(models) == 30
    trained = [t for t in strategy.trials if t.status == "trained"]
    assert any(t.latency[CPU] > budget[CPU] for t in trained)  # soft: over-budget cells may be trained
    for t in trained:
        assert t.fitness == pytest.approx(reward(t.metric, t.latency, budget))


def test_nsga2_exports_a_feasible_pareto_front(nb201, tmp_path):
    from nnmeter_nas.strategies import MultiObjectiveEvolution

    budget = {GPU: float(np.percentile(nb201["lat"][:, 1], 75))}
    strategy = MultiObjectiveEvolution(nb201["lookup"], [CPU, GPU], budgets=budget, population_size=8, seed=0)
    _, models = _run(nb201, strategy, tmp_path, max_models=32)
    assert len(models) == 32
    front = strategy.export_pareto_front()
    assert front
    F = np.array([[-r["metric"], r["latency"][CPU], r["latency"][GPU]] for r in front])
    assert pareto_mask(F).all()
    assert [r["latency"][CPU] for r in front] == sorted(r["latency"][CPU] for r in front)
    everything = np.array([[-t.metric, t.latency[CPU], t.latency[GPU]] for t in strategy.trials])
    assert len(front) == len({tuple(x) for x in everything[pareto_mask(everything)]})
    assert all(t.latency[GPU] <= budget[GPU] for t in strategy.trials)


# ----------------------------------------------------------------------------- bad input

def test_budget_nobody_meets_fails_early_with_smallest_latency(nb201, tmp_path):
    from nnmeter_nas.strategies import ConstrainedEvolution, InfeasibleBudgetError

    smallest = float(nb201["lat"][:, 0].min())
    strategy = ConstrainedEvolution(nb201["lookup"], {CPU: smallest * 0.5}, seed=0, patience=100)
    with pytest.raises(InfeasibleBudgetError) as err:
        _run(nb201, strategy, tmp_path, max_models=10)
    msg = str(err.value)
    assert CPU in msg and "smallest seen" in msg
    seen = float(msg.split("smallest seen ")[1].split(" ms")[0])
    assert smallest <= seen < smallest * 2  # a real latency from the table, near the minimum
    assert strategy.trials == []  # nothing was trained


def test_latency_source_missing_a_device(nb201, tmp_path):
    from nnmeter_nas.strategies import ConstrainedRandom, LatencySourceError

    only_cpu = lambda sample: {CPU: nb201["lookup"](sample)[CPU]}  # noqa: E731
    strategy = ConstrainedRandom(only_cpu, {CPU: 100.0, GPU: 100.0}, seed=0)
    with pytest.raises(LatencySourceError, match=GPU):
        _run(nb201, strategy, tmp_path, max_models=5)
    # a plain number is accepted for a single device
    single = ConstrainedRandom(lambda s: nb201["lookup"](s)[CPU], {CPU: 100.0}, seed=0)
    _, models = _run(nb201, single, tmp_path, max_models=5)
    assert len(models) == 5
    nan_source = ConstrainedRandom(lambda s: {CPU: float("nan")}, {CPU: 100.0}, seed=0)
    with pytest.raises(LatencySourceError, match="finite"):
        _run(nb201, nan_source, tmp_path, max_models=5)


def test_bad_arguments_are_rejected(nb201):
    from nnmeter_nas.strategies import ConstrainedEvolution, ConstrainedRandom, MultiObjectiveEvolution

    with pytest.raises(TypeError, match="callable"):
        ConstrainedRandom({CPU: 1.0}, {CPU: 10.0})
    with pytest.raises(ValueError, match=CPU):
        ConstrainedRandom(nb201["lookup"], {CPU: -1.0})
    with pytest.raises(ValueError, match="budgets"):
        ConstrainedEvolution(nb201["lookup"], {})
    with pytest.raises(ValueError, match="sample_size"):
        ConstrainedEvolution(nb201["lookup"], {CPU: 10.0}, population_size=3, sample_size=5)
    with pytest.raises(ValueError, match="device"):
        MultiObjectiveEvolution(nb201["lookup"], [])


def test_non_finite_accuracy_is_reported_and_results_kept(nb201, tmp_path, caplog):
    from nnmeter_nas.search_spaces.nasbench201 import sample_to_arch_str
    from nnmeter_nas.strategies import ConstrainedEvolution

    lookup = nb201["lookup"]
    calls = []

    def flaky(sample):
        calls.append(sample)
        return float("nan") if len(calls) % 4 == 0 else lookup.accuracy(sample)

    strategy = ConstrainedEvolution(lookup, {CPU: nb201["p25"][CPU]}, population_size=6, sample_size=2, seed=2)
    logger = logging.getLogger("nni.nnmeter_nas.strategies")  # NNI's 'nni' logger may not propagate
    logger.addHandler(caplog.handler)
    try:
        exp, models = _run(nb201, strategy, tmp_path, max_models=24, metric_fn=flaky)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(models) == 24  # the search went on
    bad = [t for t in strategy.trials if t.status == "bad_metric"]
    assert len(bad) == 6
    assert any(r.levelno == logging.ERROR and "non-finite" in r.getMessage() for r in caplog.records)
    assert any("trials done" in r.getMessage() and "best feasible so far" in r.getMessage()
               for r in caplog.records)  # progress reports
    ranked = list(strategy.list_models())
    assert len(ranked) == 18 and all(math.isfinite(m.metric) for m in ranked)
    assert all(sample_to_arch_str(t.sample) != sample_to_arch_str(strategy.best_feasible().sample) for t in bad)


def test_tabular_evaluator_can_build_the_networks(nb201, tmp_path):
    from nnmeter_nas.search_spaces.nasbench201 import sample_to_arch_str
    from nnmeter_nas.strategies import ConstrainedRandom, TabularEvaluator
    from nnmeter_nas.nni.experiment import evaluated_models, run_sequential_experiment

    built = []

    def metric(sample):
        return nb201["lookup"].accuracy(sample)

    class Recording(TabularEvaluator):
        def _execute(self, model):
            built.append(model.executable_model())
            return super()._execute(model)

    strategy = ConstrainedRandom(nb201["lookup"], {CPU: 100.0}, seed=0)
    exp = run_sequential_experiment(nb201["space"], Recording(metric, instantiate=True), strategy,
                                    max_models=3, workdir=tmp_path)
    models = evaluated_models(exp)
    assert [net.arch_str for net in built] == [sample_to_arch_str(m.sample) for m in models]


def test_state_dict_round_trip(nb201, tmp_path):
    from nnmeter_nas.strategies import ConstrainedEvolution

    kwargs = dict(population_size=6, sample_size=2, seed=5)
    budget = {CPU: nb201["p25"][CPU]}
    first = ConstrainedEvolution(nb201["lookup"], budget, **kwargs)
    _run(nb201, first, tmp_path, max_models=12)
    again = ConstrainedEvolution(nb201["lookup"], budget, **kwargs)
    again.load_state_dict(first.state_dict())
    assert [t.sample for t in again.trials] == [t.sample for t in first.trials]
    assert again.best_feasible().metric == first.best_feasible().metric
    assert [t.sample for t in again._population] == [t.sample for t in first._population]


def test_unknown_budget_device_is_refused_when_the_strategy_is_made(dummy_predictor):
    """A budget on a device the table does not give fails at construction with the closest
    name (it used to fail at the first sample, inside the running experiment); a plain function
    source, which does not say its devices, gets the closest name when it is first asked."""
    pytest.importorskip("torch")
    from nnmeter_nas.errors import DeviceListError, LatencyBudgetError, LatencySourceError
    from nnmeter_nas.nni import LatencyProfiler
    from nnmeter_nas.strategies import (ConstrainedEvolution, ConstrainedRandom,
                                        MultiObjectiveEvolution)
    from test_nni_spaces import TinySpace

    prof = LatencyProfiler(TinySpace(), dummy_predictor, (1, 3, 16, 16))
    for source in (prof, prof.profile_all, prof.table):
        with pytest.raises(LatencyBudgetError, match=r"budgets names device 'dumy'.*did you "
                                                     r"mean 'dummy'\?.*\['dummy'\]"):
            ConstrainedEvolution(source, {"dumy": 1.0})
    with pytest.raises(LatencyBudgetError, match=r"devices= names device 'cpu'"):
        MultiObjectiveEvolution(prof, ["cpu"])
    with pytest.raises(DeviceListError, match="objective device"):
        MultiObjectiveEvolution(prof, [])
    ConstrainedEvolution(prof, {"dummy": 1.0})  # the right name is accepted
    by_hand = ConstrainedRandom(lambda sample: {CPU: 1.0}, {"cortexA76cpu": 2.0})
    with pytest.raises(LatencySourceError, match=f"did you mean '{CPU}'"):
        by_hand.latency_of({"a": 1})
    with pytest.raises(LatencyBudgetError, match="positive number of ms"):
        ConstrainedRandom(prof, {"dummy": -1.0})
    with pytest.raises(LatencyBudgetError, match="needs latency budgets"):
        ConstrainedEvolution(prof, {})
