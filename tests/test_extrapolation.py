"""Kernel cost models extrapolate by construction (issue 14, tests (a)-(d)).

(a) at fixed shape ratios latency never decreases as a kernel's work grows; (b) no plateau:
doubling the work far outside the data roughly doubles latency; (c) stored in the package
format without pickle, vectorised, one kernel's latency independent of the others; (d)
``in_domain`` still tells calibrated from extrapolated. Checked on random cost models and on
the four shipped device packages, on random feature rows far outside their training ranges.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnmeter_nas.fitting.cost_terms import TERM_SETS, terms_of
from nnmeter_nas.packages.format import PredictorPackage, write_package
from nnmeter_nas.regressors import KernelCostModel, load_regressor
from nnmeter_nas.regressors.cost_model import term_arrays

FOUR = ("cortexA76cpu_tflite21", "adreno640gpu_tflite21", "adreno630gpu_tflite21",
        "myriadvpu_openvino2019r2")
PKG_ROOT = Path(__file__).resolve().parents[1] / "nnmeter_nas" / "data" / "predictors"


def conv_row(hw, cin, cout, k, s, dw=False):
    params = cout * (k * k + 1) if dw else cout * (k * k * cin + 1)
    flops = 2 * (hw / s) ** 2 * params
    return [hw, cin, cout, k, s, flops / 2e6, params / 1e6]


def rows_for(reg, hw, c, k, s, rng_cout_ratio=1.0):
    """A feature row of ``reg`` for a kernel of area ``hw^2`` and width ``c``."""
    if reg == "conv-bn-relu":
        return conv_row(hw, c, c * rng_cout_ratio, k, s)
    if reg == "dwconv-bn-relu":
        return conv_row(hw, c, c, k, s, dw=True)
    if reg in ("avgpool", "maxpool"):
        return [hw, c, c, k, s]
    if reg == "fc":
        return [c, c * rng_cout_ratio, (2 * c + 1) * c * rng_cout_ratio / 2e6,
                (2 * c + 1) * c * rng_cout_ratio / 1e6]
    if reg in ("add", "addrelu"):
        return [hw, c, c]
    if reg == "concat":
        return [hw, 2, c, c, 0, 0]
    return [hw, c]


def random_model(reg, n_features, seed, term_set="default"):
    terms = [t for _, t in terms_of(reg, term_set)]
    coef = np.random.default_rng(seed).exponential(1e-3, len(terms))
    return KernelCostModel(regressor=reg, n_features=n_features, coef=coef,
                           **term_arrays(reg, terms))


REGS = [("conv-bn-relu", 7), ("dwconv-bn-relu", 7), ("avgpool", 5), ("maxpool", 5),
        ("add", 3), ("concat", 6), ("relu", 2), ("channelshuffle", 2), ("se", 2)]


def shipped(device):
    p = PKG_ROOT / device
    if not (p / "manifest.json").is_file():
        pytest.skip(f"no package {device}")
    pkg = PredictorPackage.load(p)
    if not any(isinstance(r, KernelCostModel) for r in pkg.regressors.values()):
        pytest.skip(f"{device} is not a cost-model package")
    return pkg


def far_cases(seed=0, n=40):
    """Random kernels far outside any training range: 300-3000 px, 600-6000 channels."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (float(rng.integers(300, 3000)), float(rng.integers(600, 6000)),
               int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 2])),
               float(rng.choice([0.5, 1.0, 2.0])))


def check_monotone_and_linear(model, reg):
    for hw, c, k, s, ratio in far_cases():
        if reg == "fc":  # far outside for a classifier: 6,000-60,000 inputs
            k, s, c = 1, 1, 10 * c
        # (a) growing area or width at fixed ratios never lowers latency
        for grow in ("area", "width"):
            scales = [1.0, 1.25, 1.5, 2.0, 3.0, 4.0]
            rows = [rows_for(reg, hw * (f if grow == "area" else 1), c * (f if grow == "width"
                                                                          else 1), k, s, ratio)
                    for f in scales]
            y = model.predict(np.asarray(rows))
            assert np.all(np.diff(y) >= -1e-9 * y[:-1]), (reg, grow, rows[0], y)
        # (b) doubling the work by doubling the area (hw * sqrt 2) roughly doubles latency
        if reg != "fc":
            y1, y2 = model.predict(np.asarray([rows_for(reg, hw, c, k, s, ratio),
                                               rows_for(reg, hw * np.sqrt(2), c, k, s, ratio)]))
            assert 1.8 <= y2 / y1 <= 2.0 + 1e-9, (reg, hw, c, y1, y2)
        else:
            y1, y2 = model.predict(np.asarray([rows_for(reg, hw, c, k, s, ratio),
                                               rows_for(reg, hw, 2 * c, k, s, ratio)]))
            assert 1.8 <= y2 / y1 <= 4.0 + 1e-9


@pytest.mark.parametrize("reg,nf", REGS)
def test_random_cost_models_are_monotone_without_plateau(reg, nf):
    for seed in range(3):
        check_monotone_and_linear(random_model(reg, nf, seed), reg)


@pytest.mark.parametrize("term_set", [t for t in TERM_SETS if t != "default"])
@pytest.mark.parametrize("reg,nf", REGS + [("bnrelu", 2), ("split", 2)])
def test_every_term_set_is_monotone_without_plateau(reg, nf, term_set):
    for seed in range(3):
        check_monotone_and_linear(random_model(reg, nf, seed, term_set), reg)


@pytest.mark.parametrize("device", FOUR)
def test_shipped_packages_extrapolate_monotonically_without_plateau(device):
    pkg = shipped(device)
    for reg in ("conv-bn-relu", "dwconv-bn-relu", "maxpool", "avgpool", "fc", "add",
                "concat", "channelshuffle", "split", "global-avgpool", "hswish"):
        model = pkg.regressors[reg]
        assert isinstance(model, KernelCostModel)
        check_monotone_and_linear(model, reg)


def test_negative_coefficient_or_exponent_is_refused():
    terms = [t for _, t in terms_of("relu")]
    arrays = term_arrays("relu", terms)
    with pytest.raises(ValueError, match=">= 0"):
        KernelCostModel(regressor="relu", n_features=2, coef=-np.ones(len(terms)), **arrays)
    arrays["exponents"] = -arrays["exponents"]
    with pytest.raises(ValueError, match=">= 0"):
        KernelCostModel(regressor="relu", n_features=2, coef=np.ones(len(terms)), **arrays)


def test_stored_without_pickle_and_vectorised(tmp_path):
    """(c) npz round trip with allow_pickle=False through the package format; a batch gives
    each kernel what it gets alone (network = sum of kernels, lookup tables stay exact)."""
    model = random_model("conv-bn-relu", 7, 0)
    X = np.asarray([conv_row(hw, c, 2 * c, k, s) for hw, c, k, s in
                    [(7, 512, 3, 1), (112, 32, 3, 2), (224, 3, 7, 2), (1000, 4000, 1, 1)]])
    model = KernelCostModel(
        regressor="conv-bn-relu", n_features=7, coef=model.coef, exponents=model.exponents,
        gate_feature=model.gate_feature, gate_lo=model.gate_lo, gate_hi=model.gate_hi,
        corr_rows=X[:1], corr_factor=[1.2])
    blob = model.to_npz_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        assert set(z.files) >= {"coef", "exponents", "header"}
    back = load_regressor(blob)
    assert isinstance(back, KernelCostModel)
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    single = np.array([model.predict(x[None])[0] for x in X])
    np.testing.assert_allclose(model.predict(X), single, rtol=1e-12)
    # the correction applies to its configuration only, within its bound
    assert model.predict(X[:1])[0] == pytest.approx(1.2 * model.predict_uncorrected(X[:1])[0])
    np.testing.assert_array_equal(model.predict(X[1:]), model.predict_uncorrected(X[1:]))

    dest = write_package(tmp_path / "pkg", name="t", version="1", device="t", framework="x",
                         regressors={"conv-bn-relu": model},
                         fusion_rules={"MON": {"obey": 0}},
                         kernel_info={"conv-bn-relu": {"feature_range": {
                             "min": X.min(0).tolist(), "max": X.max(0).tolist()}}})
    pkg = PredictorPackage.load(dest)
    assert pkg.manifest["kernels"]["conv-bn-relu"]["kind"] == "cost-model"
    np.testing.assert_array_equal(pkg.regressors["conv-bn-relu"].predict(X), model.predict(X))
    for f in dest.rglob("*.npz"):
        with zipfile.ZipFile(f) as z:
            assert all(not n.endswith(".pkl") for n in z.namelist())


def test_out_of_bound_correction_is_refused():
    m = random_model("relu", 2, 0)
    with pytest.raises(ValueError, match="correction"):
        KernelCostModel(regressor="relu", n_features=2, coef=m.coef, exponents=m.exponents,
                        gate_feature=m.gate_feature, gate_lo=m.gate_lo, gate_hi=m.gate_hi,
                        corr_rows=[[8, 16]], corr_factor=[3.0], corr_bound=1.5)


@pytest.mark.parametrize("device", FOUR)
def test_in_domain_tells_calibrated_from_extrapolated(device):
    """(d) a measured configuration is in domain; the same kernel far larger is not, and gets
    a larger latency rather than a plateau."""
    from nnmeter_nas.predictor import LatencyPredictor

    pkg = shipped(device)
    pred = LatencyPredictor(pkg)
    info = pkg.manifest["kernels"]["conv-bn-relu"]
    hi = np.asarray(info["feature_range"]["max"])
    # a configuration every device measured (ResNet-18's convolutions) is in domain
    from nnmeter_nas.datasets.imagenet_devices import reference_network_name
    from nnmeter_nas.fitting.sources import load_imagenet_configs

    r18 = load_imagenet_configs()[reference_network_name("resnet18_0")]
    rows = np.asarray([x for r, x in r18 if r == "conv-bn-relu"])
    assert pred._in_domain("conv-bn-relu", rows).all()
    big = conv_row(hi[0] * 4, hi[1] * 2, hi[2] * 2, 3, 1)
    assert not pred._in_domain("conv-bn-relu", np.asarray([big]))[0]
    edge = conv_row(hi[0], hi[1], hi[2], 3, 1)
    y_edge, y_big = pkg.regressors["conv-bn-relu"].predict(np.asarray([edge, big]))
    assert y_big > 8 * y_edge
    # a kernel type no measured network held is never in domain
    uncal = [r for r, k in pkg.manifest["kernels"].items() if k.get("calibrated") is False]
    for r in uncal:
        n = pkg.regressors[r].n_features
        assert not pred._in_domain(r, np.ones((1, n)) * 8)[0]


def test_fitted_models_never_plateau_even_for_families_the_data_lack():
    """A fit whose networks hold only convolutions still exports growing costs for every
    kernel type (the shared work terms have a floor), and no unseen kernel-size class of a
    convolution costs 0 ms."""
    from collections import Counter

    from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample

    rng = np.random.default_rng(1)
    samples = []
    for i in range(30):
        hw, c = float(rng.choice([14, 28, 56])), float(rng.choice([32, 64, 128]))
        cnt = Counter({("conv-bn-relu", tuple(conv_row(hw, c, c, 3, 1))): 2})
        samples.append(NetworkSample(f"n{i}", "user", cnt, 0.05 + hw * hw * c * c * 9 / 5e8))
    fit = DeviceLatencyFit().fit(samples)
    models = fit.regressors({r: nf for r, nf in REGS} | {"fc": 4})
    for reg, _ in REGS + [("fc", 4)]:
        check_monotone_and_linear(models[reg], reg)
    one_by_one = np.asarray([conv_row(56, 64, 64, 1, 1)])  # only 3x3 convs were measured
    assert models["conv-bn-relu"].predict(one_by_one)[0] > 0


@pytest.mark.parametrize("device", FOUR)
def test_fully_connected_cost_follows_its_weights_not_its_shape(device):
    """A fully connected layer streams each weight once: two layers with the same number of
    weights cost the same whatever cin and cout are (the Pixel 4 GPU measured 80-91 us per
    million weights on 18 shapes), more weights cost more, and twice the weights cost about
    twice as much far outside the data (a per-output term had charged AlexNet's 9216x4096
    layer what VGG's 25088x4096 one costs)."""
    from nnmeter_nas.predictor import LatencyPredictor

    if not (PKG_ROOT / device / "manifest.json").is_file():
        pytest.skip("package not built")
    pred = LatencyPredictor.from_path(PKG_ROOT / device)
    if not pred.version.startswith("multi-"):
        pytest.skip("not a multi-source package")

    def fc(cin, cout):
        flop = (2 * cin + 1) * cout
        return pred.predict_kernel_features("fc", np.asarray([[cin, cout, flop / 2e6,
                                                                flop / 1e6]]))[0]

    # shapes no measured network holds (measured ones may carry their bounded correction)
    assert fc(9000, 4000) == pytest.approx(fc(4000, 9000), rel=2e-3)
    assert fc(25000, 4000) > fc(9000, 4000)
    big = fc(2 ** 17, 2 ** 14)
    assert fc(2 ** 18, 2 ** 14) == pytest.approx(2 * big, rel=0.05)
