"""Offline predictors for nn-Meter's four devices fitted from NAS-Bench-201 measurements."""
from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest

from nnmeter_nas.datasets.nb201 import DATA_ENV_VAR, NB201_DEVICES, NB201Table, default_data_dir
from nnmeter_nas.fitting import AdditiveLatencyModel, accuracy_report, kernel_configs
from nnmeter_nas.fitting.lookup_tree import empty_feature_range, lookup_tree, sample_in_range
from nnmeter_nas.fitting.nb201_devices import DEVICES
from nnmeter_nas.fitting.nb201_graphs import nb201_graph_direct
from nnmeter_nas.fitting.device_package import PACKAGE_VERSION
from nnmeter_nas.fitting.nb201_package import PACKAGE_VERSION as NB201_VERSION
from nnmeter_nas.fitting.nb201_package import (indices_digest, nb201_split, network_counters,
                                               predict_networks_ms, write_nb201_package)
from nnmeter_nas.packages.registry import builtin_dir
from nnmeter_nas.predictor import LatencyPredictor, LatencyWarning

DATA_DIR = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA_DIR / "architectures.csv").is_file(),
                                reason=f"NAS-Bench-201 data not found at {DATA_DIR} (set {DATA_ENV_VAR})")


@pytest.fixture
def committed_builtin_packages():
    """The built-in NAS-Bench-201 packages are committed: their absence is a failure, not a skip."""
    missing = [d for d in NB201_DEVICES if not (builtin_dir() / d / "manifest.json").is_file()]
    if missing:
        pytest.fail(f"built-in packages {missing} are missing from {builtin_dir()} (they are "
                    "committed; rebuild with benchmarks/fit_nb201_predictors.py)")


needs_builtin = pytest.mark.usefixtures("committed_builtin_packages")

# Two pools read the same node (the exporter merges them), a skip into node 1, a dead edge.
TRICKY = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
CHAIN = "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|"  # final BN folds


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.load()


@pytest.fixture(scope="module")
def split(table):
    cells = table.measured_on_all()
    indices = np.array([c.index for c in cells])
    test = nb201_split(indices)
    return cells, indices, test


@pytest.fixture(scope="module")
def sample(split):
    """80 training and 40 held-out networks (of the packages' own split) with their graphs."""
    cells, indices, test = split
    rng = np.random.default_rng(1)
    tr = rng.choice(np.flatnonzero(~test), size=80, replace=False)
    te = rng.choice(np.flatnonzero(test), size=40, replace=False)
    graphs = {i: nb201_graph_direct(cells[i].arch_str) for i in np.concatenate([tr, te])}
    return tr, te, graphs


# ----------------------------------------------------------------------------- graphs

def test_direct_graph_has_same_kernels_as_torch_export():
    pytest.importorskip("torch")
    import itertools

    from nnmeter_nas.datasets.nb201 import NB201_OPS
    from nnmeter_nas.datasets import nb201
    from nnmeter_nas.fitting import nb201_graphs
    from nnmeter_nas.fitting.nb201_graphs import build_nb201_graph
    from nnmeter_nas.search_spaces import nasbench201

    # one home for the live-edge rule: the builder and the direct graph share it
    assert nb201_graphs.live_edges is nasbench201.live_edges is nb201.live_edges
    n_live = [len(nb201.live_edges(ops)) for ops in itertools.product(NB201_OPS, repeat=6)]
    assert max(n_live) == 6 and min(n_live) == 0

    for arch in (TRICKY, CHAIN):  # one cell a stage keeps the export fast
        via_torch = build_nb201_graph(arch, N=1)
        direct = nb201_graph_direct(arch, N=1)
        assert sorted(n.type for n in via_torch) == sorted(n.type for n in direct)
        for dev in ("cortexA76cpu_tflite21", "myriadvpu_openvino2019r2"):
            rules = DEVICES[dev].rules()
            assert kernel_configs(via_torch, rules) == kernel_configs(direct, rules), arch


def test_direct_graph_drops_none_and_dead_edges_unless_asked():
    pruned = Counter(n.type for n in nb201_graph_direct(CHAIN))
    as_tf = Counter(n.type for n in nb201_graph_direct(CHAIN, as_built_by_tf=True))
    assert "mul" not in pruned
    assert as_tf["mul"] == 15                # the three none edges of a cell read one tensor
    assert pruned["conv"] == 15 * 2 + 1 + 2 * 3  # 2 live convs a cell, stem, 3 per reduction
    assert pruned["bn"] == 0                 # the last cell ends in a conv: final BN folds


# ----------------------------------------------------------------------------- fitting method

def test_accuracy_report_known_values():
    r = accuracy_report([1.0, 2.15, 2.9, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert r["within_10pct"] == 0.75 and r["within_5pct"] == 0.5
    assert r["rmspe"] == pytest.approx(np.sqrt((0 + 0.075 ** 2 + (0.1 / 3) ** 2 + 0.04) / 4))
    assert r["kendall_tau"] == pytest.approx(1.0)


@needs_data
def test_additive_model_recovers_synthetic_kernel_latencies(split, sample):
    """Networks whose latency is an exact sum of known kernel latencies plus an overhead: the
    fit must predict unseen networks almost exactly and find the overhead."""
    cells, _, _ = split
    tr, te, graphs = sample
    rules = DEVICES["adreno640gpu_tflite21"].rules()
    counters = {i: kernel_configs(graphs[i], rules) for i in graphs}
    configs = sorted({c for cnt in counters.values() for c in cnt})
    rng = np.random.default_rng(0)
    truth = dict(zip(configs, rng.uniform(0.005, 0.2, size=len(configs))))
    overhead = 0.4

    def latency(i):
        return overhead + sum(n * truth[c] for c, n in counters[i].items())

    y_tr = np.array([latency(i) for i in tr])
    model = AdditiveLatencyModel(ridge=1e-4).fit([counters[i] for i in tr], y_tr)
    pred = model.predict([counters[i] for i in te])
    true = np.array([latency(i) for i in te])
    assert np.max(np.abs(pred / true - 1)) < 0.01
    # A model that ignores the kernels cannot do this: the constant mean is far off.
    assert np.max(np.abs(y_tr.mean() / true - 1)) > 0.05


def test_lookup_tree_returns_seen_configurations_exactly():
    X = np.array([[32, 16, 16, 3, 1, 2.37568, 0.00232], [16, 32, 32, 3, 1, 2.367488, 0.009248],
                  [8, 64, 64, 1, 1, 0.135168, 0.00416], [32, 3, 16, 3, 1, 0.458752, 0.000448]])
    y = np.array([0.31, 0.27, 0.05, 0.09])
    fill_calls = []

    def fill(Xf):
        fill_calls.append(Xf)
        return np.full(len(Xf), 0.123)

    tree = lookup_tree("conv-bn-relu", X, y, fill, n_fill=64)
    np.testing.assert_allclose(tree.predict(X), y, rtol=1e-12)
    Xf = fill_calls[0]
    assert len(Xf) > 0
    assert np.all(Xf >= X.min(axis=0) - 1e-9) and np.all(Xf <= X.max(axis=0) + 1e-9)
    np.testing.assert_allclose(tree.predict(Xf), 0.123)
    # Derived conv features stay consistent with the sampled shape.
    rows = sample_in_range("conv-bn-relu", X, 32, np.random.default_rng(0))
    hw, cin, cout, k, s = rows[:, :5].T
    np.testing.assert_allclose(rows[:, 6], cout * (k * k * cin + 1) / 1e6)
    np.testing.assert_allclose(rows[:, 5], 2 * (hw / s) ** 2 * cout * (k * k * cin + 1) / 2e6)


@needs_data
def test_package_round_trip_through_the_engine(tmp_path, table, split, sample):
    """Fit on 80 real networks, write the package, load it with the engine: the engine's
    kernel sum + overhead equals the fitted model, and NAS-Bench-201 kernels are in domain."""
    cells, _, _ = split
    tr, te, graphs = sample
    dev = "myriadvpu_openvino2019r2"
    counters = network_counters([graphs[i] for i in tr], DEVICES[dev])
    y = np.array([table.latency(cells[i].index, dev) for i in tr])
    model = AdditiveLatencyModel(ridge=1e-3).fit(counters, y)
    dest = write_nb201_package(tmp_path / dev, dev, model, n_train=len(tr),
                               validation={"note": "test"})
    pred = LatencyPredictor.from_path(dest)
    got = predict_networks_ms(pred, [graphs[i] for i in tr])
    np.testing.assert_allclose(got, model.predict(counters), rtol=1e-9)
    assert np.mean(np.abs(got / y - 1) <= 0.10) > 0.8

    m = json.loads((dest / "manifest.json").read_text())
    assert m["name"] == dev and m["version"] == NB201_VERSION and m["device"] == dev
    assert "Additive kernel model" in m["source"]["method"]
    assert m["network_overhead_ms"] == pytest.approx(model.overhead_ms_)
    assert m["source"]["fusion_rules_rationale"]
    for reg, info in m["kernels"].items():
        assert info["feature_range"] is not None, reg
        if info.get("calibrated", True):
            assert info["n_train"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyWarning)
        bd = pred.predict_kernels(graphs[te[0]])
    assert bd.in_domain is True
    assert all(k.status == "predicted" for k in bd)


# ----------------------------------------------------------------------------- shipped packages

@needs_data
@needs_builtin
def test_builtin_packages_on_held_out_networks(table, split, sample):
    """The shipped packages were fitted without the held-out networks and predict a sample of
    them within +-10 % (the full figures come from benchmarks/fit_nb201_predictors.py)."""
    cells, indices, test = split
    _, te, graphs = sample
    for dev in NB201_DEVICES:
        pred = LatencyPredictor.from_path(builtin_dir() / dev)
        m = pred.package.manifest
        assert m["source"]["data"]["train_indices_sha"] == indices_digest(indices[~test])
        assert m["validation"]["held_out"]["within_10pct"] >= 0.90
        y = np.array([table.latency(cells[i].index, dev) for i in te])
        p = predict_networks_ms(pred, [graphs[i] for i in te])
        share = np.mean(np.abs(p / y - 1) <= 0.10)
        assert share >= 0.85, (dev, share)
        assert accuracy_report(p, y)["kendall_tau"] > 0.6


@needs_builtin
def test_out_of_domain_kernels_are_flagged():
    """Kernels beyond every measured network are flagged, yet costed in proportion to their
    work; kernel types no measured network held are never in domain."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    pred = LatencyPredictor.from_path(builtin_dir() / "cortexA76cpu_tflite21")

    def conv(size):
        return nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32),
                             nn.ReLU()), (1, 3, size, size)

    inside = pred.predict_kernels(*conv(224)[:1], input_shape=conv(224)[1])
    assert [k.in_domain for k in inside if k.regressor == "conv-bn-relu"] == [True]
    with pytest.warns(LatencyWarning, match="outside the feature range"):
        big = pred.predict_kernels(*conv(2048)[:1], input_shape=conv(2048)[1])
    assert big.in_domain is False
    assert [k.in_domain for k in big if k.regressor == "conv-bn-relu"] == [False]
    # no plateau: (2048/224)^2 = 84x the work
    assert big.latency_ms > 40 * inside.latency_ms

    m = pred.package.manifest
    for reg, info in m["kernels"].items():
        if info.get("calibrated") is False:
            assert info["feature_range"] == empty_feature_range(len(info["feature_names"]))


@needs_builtin
def test_registry_lists_builtin_packages_and_installed_one_wins(tmp_path, monkeypatch):
    from nnmeter_nas.packages.registry import install_predictor, list_predictors, load_predictor

    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    rows = {(r.name, r.source): r for r in list_predictors()}
    for dev in NB201_DEVICES:
        r = rows[(dev, "builtin")]
        assert r.version == PACKAGE_VERSION and r.status == "in use"
    dev = "adreno630gpu_tflite21"
    copy = tmp_path / "copy"
    shutil.copytree(builtin_dir() / dev, copy)
    installed = install_predictor(copy)
    rows = {(r.name, r.source): r for r in list_predictors()}
    assert rows[(dev, "installed")].status == "in use"
    assert rows[(dev, "builtin")].status == "shadowed"
    assert load_predictor(dev).package.path == installed


@needs_builtin
def test_engine_adds_network_overhead():
    pred = LatencyPredictor.from_path(builtin_dir() / "myriadvpu_openvino2019r2")
    overhead = pred.package.manifest["network_overhead_ms"]
    assert overhead > 0
    g = nb201_graph_direct(TRICKY)
    kernel_sum = sum(k.latency_ms for k in pred.predict_kernels(g))
    assert pred.predict(g) == pytest.approx(kernel_sum + overhead)
