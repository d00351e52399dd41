"""Fitting a device package from a user's measured networks: one call, one command (issue 14)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from nnmeter_nas.cli import main
from nnmeter_nas.errors import MeasurementDataError
from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample
from nnmeter_nas.fitting.device_package import fit_device_package, read_networks_csv
from nnmeter_nas.fitting.nb201_devices import DEVICES
from nnmeter_nas.predictor import LatencyPredictor

BASE = "cortexA76cpu_tflite21"


def _net(width: int, depth: int, k: int):
    import torch
    from torch import nn

    layers, c = [], 3
    for i in range(depth):
        layers += [nn.Conv2d(c, width, k, 2 if i == 0 else 1, k // 2), nn.BatchNorm2d(width),
                   nn.ReLU()]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    torch.manual_seed(0)
    return nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Twelve small ONNX networks with latencies from a known linear cost (1 ms per 100 MMACs
    + 0.05 ms per layer): the fit must recover them."""
    from nnmeter_nas.fitting.configs import kernel_configs
    from nnmeter_nas.graph import load_graph
    from nnmeter_nas.graph.torch_export import export_onnx

    d = tmp_path_factory.mktemp("nets")
    rules = DEVICES[BASE].rules()
    rows = []
    for i, (w, depth, k) in enumerate([(w, dd, k) for w in (16, 32, 64) for dd in (2, 4)
                                       for k in (1, 3)]):
        path = d / f"net{i}.onnx"
        path.write_bytes(export_onnx(_net(w, depth, k), [1, 3, 64, 64]).SerializeToString())
        cnt = kernel_configs(load_graph(str(path)), rules)
        macs = sum(n * x[5] for (r, x), n in cnt.items() if r == "conv-bn-relu")
        layers = sum(n for (r, _), n in cnt.items() if r != "reshape")
        rows.append({"model": path.name, "latency_ms": f"{macs / 100 + 0.05 * layers:.6f}"})
    csv_path = d / "measured.csv"
    with csv_path.open("w", newline="") as f:
        wr = csv.DictWriter(f, ["model", "latency_ms"])
        wr.writeheader()
        wr.writerows(rows)
    return csv_path


@pytest.mark.slow  # exports twelve networks (module fixture)
def test_fit_from_csv_reproduces_the_measurements(measured, tmp_path):
    dest = fit_device_package("myphone_tflite", measured, tmp_path / "pkg", base=BASE)
    pred = LatencyPredictor.from_path(dest)
    assert pred.name == "myphone_tflite"
    with measured.open() as f:
        rows = list(csv.DictReader(f))
    got = np.array([pred.predict(str(measured.parent / r["model"])) for r in rows])
    want = np.array([float(r["latency_ms"]) for r in rows])
    assert np.max(np.abs(got / want - 1)) < 0.10, (got, want)
    assert pred.package.manifest["source"]["n_networks_by_source"] == {"user": len(rows)}


@pytest.mark.slow  # exports twelve networks (module fixture)
def test_bad_rows_are_all_named_and_nothing_is_written(measured, tmp_path):
    bad = tmp_path / "bad.csv"
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    good = measured.parent / "net0.onnx"
    bad.write_text("model,latency_ms\n"
                   f"{good},1.5\n"
                   "missing.onnx,2.0\n"
                   f"{good},-1\n"
                   f"{good},fast\n"
                   "junk.onnx,3.0\n")
    with pytest.raises(MeasurementDataError) as err:
        fit_device_package("myphone_tflite", bad, tmp_path / "pkg", base=BASE)
    msg = str(err.value)
    for row, what in ((3, "not found"), (4, "positive"), (5, "not a number"),
                      (6, "could not be loaded")):
        assert f"row {row}:" in msg and what in msg, msg
    assert "row 2:" not in msg
    assert not (tmp_path / "pkg").exists()


@pytest.mark.slow  # exports twelve networks (module fixture)
def test_missing_columns_and_unknown_device(tmp_path, measured):
    p = tmp_path / "m.csv"
    p.write_text("file,ms\na.onnx,1\n")
    with pytest.raises(MeasurementDataError, match="columns"):
        read_networks_csv(p, DEVICES[BASE].rules())
    with pytest.raises(MeasurementDataError, match="--base"):
        fit_device_package("myphone_tflite", measured, tmp_path / "x")


@pytest.mark.slow  # exports twelve networks (module fixture)
def test_cli_fit_writes_a_loadable_package(measured, tmp_path, capsys):
    out = tmp_path / "cli_pkg"
    rc = main(["predictors", "fit", "myphone_tflite", "--networks", str(measured),
               "--base", BASE, "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    assert LatencyPredictor.from_path(out).predict(str(measured.parent / "net3.onnx")) > 0
    # an existing destination is kept unless --overwrite
    rc = main(["predictors", "fit", "myphone_tflite", "--networks", str(measured),
               "--base", BASE, "--out", str(out)])
    assert rc != 0 and "already exists" in capsys.readouterr().err


def test_cli_fit_bad_csv_fails_cleanly(tmp_path, capsys):
    p = tmp_path / "m.csv"
    p.write_text("model,latency_ms\nnope.onnx,0\n")
    rc = main(["predictors", "fit", "myphone_tflite", "--networks", str(p), "--base", BASE,
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "row 2" in err
    assert not (tmp_path / "o").exists()


def test_foreign_source_factor_is_recovered():
    """A source measured with another runtime enters through a fitted factor: networks measured
    at 0.6x the device's latency give factor 0.6 and leave the device's costs unchanged."""
    from collections import Counter

    rng = np.random.default_rng(0)
    samples = []
    for i in range(40):
        hw, c = float(rng.choice([8, 16, 32, 56])), float(rng.choice([16, 32, 64, 128]))
        cfg = ("conv-bn-relu", (hw, c, c, 3.0, 1.0, hw * hw * 9 * c * c / 1e6, 9 * c * c / 1e6))
        cnt = Counter({cfg: int(rng.integers(1, 6))})
        true = sum(n * (0.01 + x[5] / 50) for (_, x), n in cnt.items())
        samples.append(NetworkSample(f"n{i}", "user" if i % 2 else "other-runtime", cnt,
                                     true if i % 2 else 0.6 * true))
    fit = DeviceLatencyFit(corrections=False, factor_groups=False).fit(samples)
    assert fit.factors_["other-runtime"]["conv"] == pytest.approx(0.6, rel=0.03)
    native = [s for s in samples if s.source == "user"]
    np.testing.assert_allclose(fit.predict(native), [s.latency_ms for s in native], rtol=0.03)


def test_conv1x1_factor_mode_separates_the_1x1_convolutions_ratio():
    """``factor_groups="conv1x1"``: a source whose runtime sped 1x1 convolutions up by another
    ratio (0.4) than the rest (0.6) gets both back; one factor cannot fit it."""
    from collections import Counter

    rng = np.random.default_rng(1)
    samples = []
    for i in range(60):
        cnt = Counter()
        for k in (1.0, 3.0):
            hw, c = float(rng.choice([8, 16, 32, 56])), float(rng.choice([16, 32, 64, 128]))
            cfg = ("conv-bn-relu", (hw, c, c, k, 1.0, hw * hw * k * k * c * c / 1e6,
                                    k * k * c * c / 1e6))
            cnt[cfg] += int(rng.integers(1, 6))
        dev_ms = {k: sum(n * (0.01 + x[5] / 50) for (_, x), n in cnt.items() if x[3] == k)
                  for k in (1.0, 3.0)}
        native = i % 2 == 1
        ms = dev_ms[1.0] + dev_ms[3.0] if native else 0.4 * dev_ms[1.0] + 0.6 * dev_ms[3.0]
        samples.append(NetworkSample(f"n{i}", "user" if native else "newer", cnt, ms))
    fit = DeviceLatencyFit(corrections=False, factor_groups="conv1x1").fit(samples)
    f = fit.factors_["newer"]
    assert f["conv1x1"] == pytest.approx(0.4, rel=0.05)
    assert f["conv"] == pytest.approx(0.6, rel=0.05)
    assert f["other"] == f["conv"]            # everything but 1x1 convolutions shares it
    foreign = [s for s in samples if s.source == "newer"]
    err = fit.predict(foreign) / np.array([s.latency_ms for s in foreign]) - 1
    assert np.max(np.abs(err)) < 0.05
    one = DeviceLatencyFit(corrections=False, factor_groups=False).fit(samples)
    err1 = one.predict(foreign) / np.array([s.latency_ms for s in foreign]) - 1
    assert np.max(np.abs(err1)) > 2 * np.max(np.abs(err))


def test_launch_factor_term_splits_a_runtimes_fixed_and_work_ratios():
    """``factor_terms=("launch",)``: a runtime that changed each kernel's fixed dispatch cost by
    one ratio (1.5) and its work by another (0.5) gets both back, the launch factor reported
    under ``"launch"``; one factor per kernel group cannot fit small and large kernels at
    once."""
    from collections import Counter

    from nnmeter_nas.fitting.device_fit import term_class

    assert term_class("conv-bn-relu:launch") == "launch"
    assert term_class("conv-bn-relu:elements_in") == "memory"
    assert term_class("conv-bn-relu:macs_per_cin") == "thin"
    assert term_class("conv:macs") is None and term_class("excess:dwconv-bn-relu:macs_k3") is None
    rng = np.random.default_rng(2)
    samples = []
    for i in range(80):
        cnt = Counter()
        for _ in range(3):
            hw, c = float(rng.choice([4, 8, 32, 64])), float(rng.choice([8, 16, 128, 256]))
            cfg = ("conv-bn-relu", (hw, c, c, 3.0, 1.0, hw * hw * 9 * c * c / 1e6,
                                    9 * c * c / 1e6))
            cnt[cfg] += int(rng.integers(1, 6))
        launch = 0.05 * sum(cnt.values())
        work = sum(n * x[5] / 50 for (_, x), n in cnt.items())
        native = i % 2 == 1
        samples.append(NetworkSample(f"n{i}", "user" if native else "newer", cnt,
                                     launch + work if native else 1.5 * launch + 0.5 * work))
    fit = DeviceLatencyFit(corrections=False, factor_groups=False,
                           factor_terms=("launch",)).fit(samples)
    f = fit.factors_["newer"]
    assert f["launch"] == pytest.approx(1.5, rel=0.1)
    assert f["conv"] == pytest.approx(0.5, rel=0.1)
    foreign = [s for s in samples if s.source == "newer"]
    err = fit.predict(foreign) / np.array([s.latency_ms for s in foreign]) - 1
    assert np.max(np.abs(err)) < 0.05
    native = [s for s in samples if s.source == "user"]
    np.testing.assert_allclose(fit.predict(native, as_source=False),
                               [s.latency_ms for s in native], rtol=0.05)
    one = DeviceLatencyFit(corrections=False, factor_groups=False).fit(samples)
    err1 = one.predict(foreign) / np.array([s.latency_ms for s in foreign]) - 1
    assert np.max(np.abs(err1)) > 2 * np.max(np.abs(err))


def test_borrowed_rows_are_scaled_fitted_and_never_calibrate():
    """Another device's fully connected rows enter in this device's units (ratio fitted on the
    networks both ran, geometric mean) and never put a kernel in domain here."""
    from collections import Counter

    from nnmeter_nas.fitting.device_package import kernel_ranges
    from nnmeter_nas.fitting.sources import borrowed_fc_samples

    conv = ("conv-bn-relu", (56.0, 64.0, 64.0, 3.0, 1.0, 115.6, 0.037))
    fc_own = ("fc", (512.0, 4096.0, 2.1, 4.2))
    fc_other = ("fc", (1024.0, 1000.0, 1.0, 2.0))
    target = [NetworkSample("a", "nnmeter-reference", Counter({conv: 2}), 20.0),
              NetworkSample("b", "nnmeter-reference", Counter({conv: 1, fc_own: 1}), 30.0)]
    donor = [NetworkSample("a", "nnmeter-reference", Counter(), 10.0),
             NetworkSample("b", "nnmeter-reference", Counter(), 20.0),
             NetworkSample("c", "nnmeter-reference", Counter(), 99.0)]
    ops = [NetworkSample("x#1", "pixel4", Counter({fc_other: 1}), 0.5, whole_network=False)]
    got = borrowed_fc_samples(target, donor, ops, donor_factor=0.5)
    scale = np.sqrt(2.0 * 1.5)                # geometric mean of 20/10 and 30/20
    assert len(got) == 1 and got[0].source == "borrowed" and not got[0].whole_network
    assert got[0].latency_ms == pytest.approx(0.5 / 0.5 * scale)
    assert borrowed_fc_samples(target, donor[2:], ops, 0.5) == []   # nothing shared
    ranges = kernel_ranges(target + got)
    X, by_source = ranges["fc"]
    assert X.tolist() == [list(fc_own[1])]    # the borrowed shape is not a measured one
    assert by_source == {"nnmeter-reference": 1, "borrowed": 1}
    fit = DeviceLatencyFit(corrections=False).fit(target + got)
    assert "borrowed" not in fit.factors_ and fit.correction_ == {}


def _two_family_samples():
    """60 synthetic networks of dense convolutions, half measured on the device (``user``),
    half by a newer runtime (``newer``) at 0.4x the device's latency for large maps and 0.8x
    for small ones."""
    from collections import Counter

    rng = np.random.default_rng(3)
    samples = []
    for i in range(60):
        cnt = Counter()
        big = i % 4 < 2
        for _ in range(2):
            hw = float(rng.choice([32, 56] if big else [4, 8]))
            c = float(rng.choice([16, 32, 64, 128]))
            k = float(rng.choice([1.0, 3.0]))
            cfg = ("conv-bn-relu", (hw, c, c, k, 1.0, hw * hw * k * k * c * c / 1e6,
                                    k * k * c * c / 1e6))
            cnt[cfg] += int(rng.integers(1, 4))
        true = sum(n * (0.02 + x[5] / 40) for (_, x), n in cnt.items())
        native = i % 2 == 1
        ratio = 0.4 if big else 0.8
        samples.append(NetworkSample(f"n{i}", "user" if native else "newer", cnt,
                                     true if native else ratio * true))
    return samples


def test_network_factor_ridge_gives_each_foreign_network_its_own_ratio():
    """``network_factor_ridge``: a runtime whose ratio to the device differs by network (0.4
    for networks of large maps, 0.8 for small ones) distorts the device's costs when every
    network shares the source's factor; with a free factor per network (lambda = 0) the
    device's own networks are fitted as if the foreign ones were absent, the product of the
    source's and the network's factor is each network's ratio, and a network the fit did not
    see is predicted with the source's factor alone. A large lambda gives back the shared
    factor; None (the default) reports no network factors. (The alternation between costs
    and factors converges slowly at lambda = 0: 200 rounds here, 10 in the built-in fits.)"""
    samples = _two_family_samples()
    native = [s for s in samples if s.source == "user"]
    y_nat = np.array([s.latency_ms for s in native])
    base = dict(corrections=False, factor_groups=False, n_alternations=200)
    shared = DeviceLatencyFit(**base).fit(samples)
    assert shared.network_factors_ == {}
    free = DeviceLatencyFit(network_factor_ridge=0.0, **base).fit(samples)
    err_shared = np.abs(shared.predict(native) / y_nat - 1).max()
    err_free = np.abs(free.predict(native) / y_nat - 1).max()
    assert err_free < 0.02 < err_shared
    f = free.factors_["newer"]["conv"]
    foreign = [s for s in samples if s.source == "newer"]
    np.testing.assert_allclose(free.predict(foreign), [s.latency_ms for s in foreign],
                               rtol=0.03)
    ratio = {big: np.median([f * free.network_factors_[s.name] for s in foreign
                             if (int(s.name[1:]) % 4 < 2) == big]) for big in (True, False)}
    assert ratio[True] / ratio[False] == pytest.approx(0.5, rel=0.1)
    # a network the fit did not see: the source's factor (and overhead) only
    unseen = NetworkSample("unseen", "newer", samples[0].configs, samples[0].latency_ms)
    assert free.predict([unseen])[0] == pytest.approx(
        free.predict([samples[0]])[0] / free.network_factors_["n0"], rel=1e-6)
    stiff = DeviceLatencyFit(network_factor_ridge=1e6, **base).fit(samples)
    assert max(abs(np.log(m)) for m in stiff.network_factors_.values()) < 1e-3
    np.testing.assert_allclose(stiff.predict(native), shared.predict(native), rtol=1e-3)
    with pytest.raises(ValueError, match="network_factor_ridge"):
        DeviceLatencyFit(network_factor_ridge=-1.0).fit(samples)


def test_alternation_reports_and_warns_when_stopped_before_convergence():
    """The (costs, factors) alternation does not stop early: stopped while a factor still moves
    it says so (``converged_``, a ConvergenceWarning naming the source and the rounds); run long
    enough it converges silently; without foreign sources there is nothing to alternate."""
    import warnings

    from nnmeter_nas.errors import ConvergenceWarning

    samples = _two_family_samples()
    base = dict(corrections=False, network_factor_ridge=0.0)
    with pytest.warns(ConvergenceWarning, match=r"newer.*after 2 rounds"):
        short = DeviceLatencyFit(n_alternations=2, **base).fit(samples)
    assert not short.converged_ and short.factor_change_ > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        long = DeviceLatencyFit(n_alternations=400, **base).fit(samples)
        native = DeviceLatencyFit(**base).fit([s for s in samples if s.source == "user"])
    assert long.converged_ and long.factor_change_ <= 1e-3
    assert native.converged_ and native.factor_change_ == 0.0

