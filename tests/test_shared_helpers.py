"""The helpers several layers share, each in one home (no copies that could drift apart)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nnmeter_nas"


def _defined_functions(name: str) -> list[str]:
    return [str(f.relative_to(PKG)) for f in sorted(PKG.rglob("*.py"))
            for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name == name]


@pytest.mark.parametrize("name, home", [
    ("hashable_value", "nni/sample_values.py"),
    ("jsonable_value", "nni/sample_values.py"),
    ("safe_member", "packages/archive_paths.py"),
    ("torch_threads", "nni/torch_threads.py"),
    ("resolve_predictors", "packages/devices.py"),
    ("register_space", "search_spaces/registry.py"),
])
def test_each_helper_has_one_definition(name, home):
    assert _defined_functions(name) == [home]


@pytest.mark.parametrize("old", ["_hashable", "_jsonable", "_safe_rel", "_torch_threads",
                                 "resolve_devices"])
def test_former_copies_are_gone(old):
    assert _defined_functions(old) == []


def test_value_conversions_round_trip():
    from nnmeter_nas.nni.sample_values import hashable_value, jsonable_value

    assert hashable_value([1, [2, 3]]) == (1, (2, 3))
    assert jsonable_value((1, (2, 3))) == [1, [2, 3]]
    assert jsonable_value(hashable_value(["a", ["b"]])) == ["a", ["b"]]
    assert hashable_value("k3") == "k3"


@pytest.mark.parametrize("name, ok", [("pkg/kernels/conv.npz", True), ("a\\b.json", True),
                                      ("../x", False), ("/etc/passwd", False),
                                      ("C:/x", False), ("", False), ("a/../../b", False)])
def test_safe_member(name, ok):
    from nnmeter_nas.packages.archive_paths import safe_member

    assert (safe_member(name) is not None) == ok


def test_torch_threads_restores_the_setting():
    import torch

    from nnmeter_nas.nni.torch_threads import torch_threads

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(target):
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_device_lists_resolve_the_same_everywhere(dummy_predictor):
    from nnmeter_nas.errors import DeviceListError
    from nnmeter_nas.nni.table_builder import resolve_predictors as from_nni
    from nnmeter_nas.packages.devices import resolve_predictors
    from nnmeter_nas.parallel.api import resolve_devices

    assert resolve_devices is resolve_predictors and from_nni is resolve_predictors
    assert resolve_predictors(dummy_predictor) == [dummy_predictor]
    with pytest.raises(DeviceListError, match="given twice"):
        resolve_predictors([dummy_predictor, dummy_predictor])
    with pytest.raises(ValueError, match="given twice"):  # DeviceListError is a ValueError
        resolve_predictors([dummy_predictor, dummy_predictor])
    with pytest.raises(DeviceListError, match="no device"):
        resolve_predictors([])
    with pytest.raises(TypeError, match="not int"):
        resolve_predictors([3])


def test_one_space_registry_serves_scoring_and_sampling(monkeypatch):
    from nnmeter_nas.parallel import spaces
    from nnmeter_nas.search_spaces import registry, sampling

    assert spaces.BUILTIN_SPACES is registry.SPACES
    assert set(sampling.SPACES) == {"spos", "spos-small", "nb201"}
    monkeypatch.setattr(registry, "SPACES", dict(registry.SPACES))
    monkeypatch.setattr(spaces, "SPACES", registry.SPACES)
    monkeypatch.setattr(spaces, "BUILTIN_SPACES", registry.SPACES)

    def draw(n, seed, exclude):
        return iter([(i, object, (1, 3, 8, 8)) for i in range(n)])

    registry.register_space("mine", object, (1, 3, 8, 8), "test", random_networks=draw)
    assert spaces.resolve_space("mine").input_shape == (1, 3, 8, 8)
    assert [a for a, _, _ in sampling.random_networks("mine", 3)] == [0, 1, 2]
    assert "mine" in sampling.sampled_spaces()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_space("mine", object, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown search space 'toy'"):
        sampling.random_networks("toy", 1)  # registered, but draws no random networks


def test_non_strategies_left_strategies_but_old_paths_work():
    import nnmeter_nas.strategies as strategies
    from nnmeter_nas.nni import experiment, tabular
    from nnmeter_nas.strategies import tabular as old

    assert old.TabularEvaluator is tabular.TabularEvaluator is strategies.TabularEvaluator
    assert old.NB201Lookup is tabular.NB201Lookup
    assert old.run_sequential_experiment is experiment.run_sequential_experiment
    assert old.nni_home is experiment.nni_home and old.evaluated_models is experiment.evaluated_models
    strategy_modules = {p.stem for p in (PKG / "strategies").glob("*.py")}
    assert strategy_modules == {"__init__", "_base", "evolution", "nsga2", "random_search",
                                "rewards", "pareto", "tabular"}
