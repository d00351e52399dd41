"""One code path for the built-in fits of nn-Meter's four devices (issue 14): the benchmark
that writes the shipped packages and ``fit_device_package`` / ``nnmeter-nas predictors fit``
take their samples and settings from :mod:`nnmeter_nas.fitting.builtin`."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nnmeter_nas.datasets.imagenet_devices import default_data_dir
from nnmeter_nas.fitting import builtin
from nnmeter_nas.fitting.builtin import BuiltinData, fit_params

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "pixel4_e2e.csv").is_file(),
                                reason=f"ImageNet measurements not found at {DATA}")
PKG_ROOT = Path(__file__).resolve().parents[1] / "nnmeter_nas" / "data" / "predictors"
A630, A640 = "adreno630gpu_tflite21", "adreno640gpu_tflite21"


def test_fit_device_package_takes_the_builtin_samples_and_settings(monkeypatch, tmp_path):
    """For one of the four devices, fit_device_package fits on builtin_training_samples with
    the device's built-in settings (the user's own settings on top)."""
    from nnmeter_nas.fitting import device_package
    from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample
    from nnmeter_nas.fitting.device_package import fit_device_package

    cfg = ("conv-bn-relu", (56.0, 32.0, 32.0, 3.0, 1.0, 28.9, 0.0092))
    fake = [NetworkSample(f"n{i}", src, Counter({cfg: i + 1}),
                          1.0 + i) for i, src in enumerate(["nb201", "nnmeter-reference",
                                                            "borrowed"])]
    monkeypatch.setattr(builtin, "builtin_training_samples",
                        lambda device, **kw: list(fake))
    seen = {}
    real_init = DeviceLatencyFit.__init__

    def spy(self, **kw):
        seen.update(kw)
        real_init(self, **kw)
    monkeypatch.setattr(device_package.DeviceLatencyFit, "__init__", spy)
    fit_device_package(A640, None, tmp_path / "p", fit_params={"theta_ridge": 1e-2})
    assert seen == {**fit_params(A640), "theta_ridge": 1e-2}
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["source"]["n_networks_by_source"]["borrowed"] == 1


@pytest.mark.slow
@needs_data
def test_adreno630_borrows_the_fc_rows_and_leave_one_out_leaves_the_network_out_of_both():
    data = BuiltinData()
    train = data.training_samples(A630, exclude={"alexnet_0"})
    borrowed = [s for s in train if s.source == "borrowed"]
    assert len(borrowed) == 57 and not any(s.whole_network for s in borrowed)
    assert all(s.name != "alexnet_0" for s in train)
    # the donor's factor comes from a 640 fit without AlexNet either
    _, donor_train = data.fit(A640, exclude={"alexnet_0"})
    assert all(s.name != "alexnet_0" for s in donor_train)
    assert (A640, frozenset({"alexnet_0"})) in data._fits
    # a left-out Pixel 4 network takes its operator rows with it
    ops = data.fc_operators(A640)
    name = ops[0].name.split("#")[0]
    held = data.training_samples(A640, exclude={name})
    assert not any(s.name == name or s.name.startswith(name + "#") for s in held)
    assert len(held) < len(data.training_samples(A640))


@pytest.mark.slow
@needs_data
def test_fit_device_package_reproduces_the_shipped_adreno630_package(tmp_path):
    """The user's refit with no networks of their own is the shipped package (same samples,
    borrowed rows included, same settings): the same coefficients and sources."""
    from nnmeter_nas.fitting.device_package import fit_device_package

    shipped = PKG_ROOT / A630
    if not (shipped / "manifest.json").is_file():
        pytest.skip("package not built")
    dest = fit_device_package(A630, None, tmp_path / A630)
    a = json.loads((shipped / "manifest.json").read_text())
    b = json.loads((dest / "manifest.json").read_text())
    assert b["source"]["n_operators_by_source"] == a["source"]["n_operators_by_source"]
    assert b["source"]["n_networks_by_source"] == a["source"]["n_networks_by_source"]
    assert b["source"]["n_operators_by_source"].get("borrowed") == 57
    files = sorted(p.name for p in (shipped / "kernels").glob("*.npz"))
    assert files
    for f in files:
        x, y = np.load(shipped / "kernels" / f), np.load(dest / "kernels" / f)
        assert np.allclose(x["coef"], y["coef"], rtol=1e-6, atol=1e-12), f


def _conv(hw, c, k=3):
    params = c * (k * k * c + 1)
    return ("conv-bn-relu", (float(hw), float(c), float(c), float(k), 1.0,
                             hw * hw * params / 1e6, params / 1e6))


def test_a_runtime_that_fuses_additions_gets_an_addition_factor_near_zero():
    """Source "newrt" runs the convolutions at half the device's time and fuses every addition
    into the convolution before it (free). With an addition factor of its own
    ("conv1x1+add") the fit finds that factor near 0; those rows then calibrate no addition
    kernel (kernel_ranges). Shared with the rest
    ("conv1x1"), the factor cannot go below FACTOR_FLOOR."""
    from nnmeter_nas.fitting.device_fit import (FACTOR_FLOOR, MIN_CALIBRATING_FACTOR,
                                                DeviceLatencyFit, NetworkSample)
    from nnmeter_nas.fitting.device_package import kernel_ranges

    rng = np.random.default_rng(0)
    samples, adds_native = [], set()
    for i in range(60):
        native = i % 2 == 0
        cnt, conv_ms, add_ms = Counter(), 0.0, 0.0
        for _ in range(int(rng.integers(2, 6))):
            hw, c = float(rng.choice([14, 28, 56])), float(rng.choice([16, 32, 64, 128]))
            n = int(rng.integers(1, 4))
            cnt[_conv(hw, c)] += n
            conv_ms += n * hw * hw * c * c * 9 / 1e6 * 0.01
            # additions of their own shapes (not tied to a convolution's)
            hw = float(rng.choice([7, 14, 28, 56] if native else [7, 14, 28, 56, 112]))
            c = float(rng.choice([24, 48, 96, 192]))
            n = int(rng.integers(0, 4))
            if n:
                cnt[("add", (hw, c, c))] += n
                add_ms += n * (0.02 + hw * hw * c * 4e-5)
        if native:
            adds_native |= {x for (r, x) in cnt if r == "add"}
        samples.append(NetworkSample(f"n{i}", "nb201" if native else "newrt", cnt,
                                     0.1 + conv_ms + add_ms if native else 0.5 * conv_ms))
    fit = DeviceLatencyFit(factor_groups="conv1x1+add", corrections=False).fit(samples)
    f = fit.factors_["newrt"]
    assert f["add"] < MIN_CALIBRATING_FACTOR
    rows = {tuple(x) for x in kernel_ranges(samples, fit)["add"][0]}
    assert rows == adds_native
    assert len({tuple(x) for x in kernel_ranges(samples)["add"][0]}) > len(adds_native)
    shared = DeviceLatencyFit(factor_groups="conv1x1", corrections=False).fit(samples)
    assert shared.factors_["newrt"]["add"] >= FACTOR_FLOOR - 1e-9


def test_copies_cost_the_shared_bandwidth_and_a_term_scale_reaches_the_stored_model():
    """In the ``"bandwidth"`` term set a concatenation, a split, a BN-ReLU and a ReLU have no
    cost term of their own: moving the same elements costs them the same. A term's ``scale``
    (a concatenation's elements are read and written: 2) is folded into the exported
    coefficient, so the stored model predicts what the fit does."""
    from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample

    cfgs = {"relu": ("relu", (28.0, 64.0)), "cat": ("concat", (28.0, 2.0, 32.0, 32.0, 0.0, 0.0)),
            "conv": ("conv-bn-relu", (28.0, 64.0, 64.0, 3.0, 1.0, 28.9, 0.037))}
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        n = {k: int(rng.integers(1, 6)) for k in cfgs}
        ms = 0.3 + 0.4 * n["conv"] + 0.05 * n["relu"] + 0.2 * n["cat"]
        samples.append(NetworkSample(f"n{i}", "user", Counter({cfgs[k]: v for k, v in n.items()}),
                                     ms))
    fit = DeviceLatencyFit(term_set="bandwidth", corrections=False).fit(samples)
    assert not any(k.startswith(("relu:", "concat:")) for k in fit.theta_)
    assert fit.kernel_ms(cfgs["relu"]) == pytest.approx(fit.kernel_ms(cfgs["cat"]))
    models = fit.regressors({"relu": 2, "concat": 6, "split": 2, "bnrelu": 2})
    for name, (reg, x) in (("relu", cfgs["relu"]), ("cat", cfgs["cat"])):
        assert models[reg].predict(np.asarray([x]))[0] == pytest.approx(fit.kernel_ms((reg, x)))
    # a split and a BN-ReLU of the same elements: the same copy
    assert models["split"].predict(np.asarray([[28.0, 64.0]]))[0] == pytest.approx(
        fit.kernel_ms(cfgs["relu"]))
    # the default term set keeps each type's own terms
    default = DeviceLatencyFit(corrections=False).fit(samples)
    assert any(k.startswith("concat:") for k in default.theta_)


def test_a_kernel_type_held_by_one_network_gets_no_term_of_its_own():
    """``min_excess_networks=2``: a kernel type only one measured network holds (its cost is
    collinear with that network's other types) keeps its own terms at 0."""
    from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample

    conv = ("conv-bn-relu", (28.0, 64.0, 64.0, 3.0, 1.0, 28.9, 0.037))
    shuffle = ("channelshuffle", (28.0, 64.0))
    samples = [NetworkSample(f"n{i}", "user", Counter({conv: i + 1}), 0.5 + 0.4 * (i + 1))
               for i in range(6)]
    samples.append(NetworkSample("odd", "user", Counter({conv: 3, shuffle: 4}), 3.0))
    on = DeviceLatencyFit(min_excess_networks=2, corrections=False).fit(samples)
    off = DeviceLatencyFit(corrections=False).fit(samples)
    assert "channelshuffle:launch" in on.unidentified_
    assert on.theta_["channelshuffle:launch"] == 0.0
    assert off.theta_["channelshuffle:launch"] > 0.0


@pytest.mark.slow
@needs_data
def test_vpu_fit_predicts_densenet_left_out_from_the_copies_bandwidth():
    """The VPU's built-in fit prices DenseNet-121's concatenations and BN-ReLUs as copies: left
    out, DenseNet-121 comes out within +-10 % (+48.7 % when they took the element-wise
    family's per-element cost, multi-4)."""
    vpu = "myriadvpu_openvino2019r2"
    assert fit_params(vpu)["term_set"] == "bandwidth"
    data = BuiltinData()
    ref = {s.name: s for s in data.references(vpu)}["densenet_0"]
    fit, _ = data.fit(vpu, exclude={"densenet_0"})
    assert abs(fit.predict([ref])[0] / ref.latency_ms - 1) <= 0.10
