"""The cache model: warm and cold kernel regressors mixed by a network's weight size."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from nnmeter_nas.cache_model import CacheModel, weight_mib
from nnmeter_nas.errors import PackageError
from nnmeter_nas.features import weight_count
from nnmeter_nas.kernels import FusionRules
from nnmeter_nas.packages.format import PredictorPackage, write_package
from nnmeter_nas.predictor import LatencyPredictor
from nnmeter_nas.testing import _dummy_regressors


def test_cold_share_rises_through_the_midpoint_and_mix_interpolates():
    cm = CacheModel(midpoint_mib=8.0, slope=2.0, scale=1.1, per_kernel_ms=0.001)
    assert cm.cold_share(8.0) == pytest.approx(0.5)
    shares = [cm.cold_share(w) for w in (0.1, 1, 4, 8, 16, 64, 1000)]
    assert shares == sorted(shares) and shares[0] < 0.01 and shares[-1] > 0.99
    assert cm.cold_share(0.0) == pytest.approx(0.0)
    np.testing.assert_allclose(cm.mix([1.0, 2.0], [3.0, 2.0], 8.0),
                               [1.1 * 2.0 + 0.001, 1.1 * 2.0 + 0.001])
    assert CacheModel.from_dict(json.loads(json.dumps(cm.to_dict()))) == cm
    with pytest.raises(ValueError, match="positive"):
        CacheModel(midpoint_mib=0.0, slope=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        CacheModel(midpoint_mib=1.0, slope=1.0, per_kernel_ms=-1.0)
    assert weight_mib(2 ** 18) == pytest.approx(1.0)  # 262144 float32 weights


def test_weight_count_reads_params_of_convolutions_and_classifiers():
    conv = [56, 32, 64, 3, 1, 0.0, 0.018496]  # params/1e6 = 64 * (9*32 + 1) / 1e6
    assert weight_count("conv-bn-relu", conv) == pytest.approx(18496)
    assert weight_count("fc", [1024, 1000, 1.0, 2.0]) == pytest.approx(1024 * 1000 + 1000)
    assert weight_count("relu", [56, 32]) == 0.0
    assert weight_count("conv-bn-relu", None) == 0.0


def test_fit_cache_model_recovers_the_parameters_it_was_generated_with():
    from nnmeter_nas.builder.cache_fit import fit_cache_model

    rng = np.random.default_rng(0)
    true = CacheModel(midpoint_mib=6.0, slope=1.5, scale=1.05, per_kernel_ms=0.002)
    n = 100
    w = np.exp(rng.uniform(np.log(0.2), np.log(200.0), n))
    count = rng.integers(20, 300, n)
    warm = rng.uniform(0.005, 0.05, n) * count  # ms: kernels of 5-50 us
    cold = warm * rng.uniform(1.1, 1.8, n)
    # mix() adds the per-kernel cost once: here the sums of `count` kernels
    y = np.array([true.mix(a, b, m) - true.per_kernel_ms + true.per_kernel_ms * k
                  for a, b, m, k in zip(warm, cold, w, count)])
    y *= np.exp(rng.normal(0.0, 0.01, n))
    got = fit_cache_model(warm, cold, w, y, n_kernels=count)
    assert got.midpoint_mib == pytest.approx(6.0, rel=0.15)
    assert got.slope == pytest.approx(1.5, rel=0.2)
    assert got.scale == pytest.approx(1.05, rel=0.03)
    assert got.per_kernel_ms == pytest.approx(0.002, rel=0.3)
    assert got.info["fit_rmspe"] < 0.02 < got.info["warm_only_rmspe"]
    # without kernel counts there is no per-kernel cost to fit
    assert fit_cache_model(warm, cold, w, y).per_kernel_ms == 0.0
    with pytest.raises(ValueError, match="one value per network"):
        fit_cache_model(warm, cold, w[:-1], y)
    with pytest.raises(ValueError, match="hundred"):
        fit_cache_model(warm[:3], cold[:3], w[:3], y[:3])


def _doubled(ens):
    return replace(ens, value=ens.value * 2.0)


def _two_regime_package(tmp_path, cm):
    warm = _dummy_regressors()
    return write_package(tmp_path / "two", name="two", version="1", device="two",
                         framework="none", regressors=warm, fusion_rules=FusionRules.default(),
                         free_kernel_types=["reshape"],
                         cold_regressors={k: _doubled(v) for k, v in warm.items()},
                         cache_model=cm)


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 256, 3, 1, 1), torch.nn.BatchNorm2d(256),
                               torch.nn.ReLU(), torch.nn.Conv2d(256, 512, 3, 2, 1),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(512, 1000))


def test_two_regime_package_mixes_warm_and_cold_by_the_networks_weights(tmp_path):
    cm = CacheModel(midpoint_mib=4.0, slope=1.0, scale=1.2, per_kernel_ms=0.0005,
                    info={"networks": 0})
    path = _two_regime_package(tmp_path, cm)
    pkg = PredictorPackage.load(path)
    assert pkg.manifest["format_version"] == 2
    assert set(pkg.cold_regressors) == set(pkg.regressors)
    assert pkg.cache_model == cm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixed = LatencyPredictor(pkg).predict_kernels(_net(), input_shape=(1, 3, 32, 32))
        warm = LatencyPredictor(pkg, cache_model=False).predict_kernels(
            _net(), input_shape=(1, 3, 32, 32))
    # 3*256*9+256 + 256*512*9+512 + 512*1000+1000 float32 weights
    params = 3 * 256 * 9 + 256 + 256 * 512 * 9 + 512 + 512 * 1000 + 1000
    assert mixed.weight_mib == pytest.approx(4 * params / 2 ** 20, rel=1e-6)
    share = cm.cold_share(mixed.weight_mib)
    assert mixed.cold_share == pytest.approx(share) and 0.4 < share < 0.7
    assert warm.cold_share is None
    for m, w in zip(mixed, warm):
        if m.status == "predicted":  # cold = 2 x warm
            assert m.latency_ms == pytest.approx(1.2 * w.latency_ms * (1 + share) + 0.0005)


def test_cold_kernels_without_a_cache_model_are_refused(tmp_path):
    path = _two_regime_package(tmp_path, CacheModel(midpoint_mib=4.0, slope=1.0))
    man = json.loads((path / "manifest.json").read_text())
    del man["cache_model"]
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(PackageError, match="no cache_model"):
        PredictorPackage.load(path)
    with pytest.raises(ValueError, match="go together"):
        write_package(tmp_path / "x", name="x", version="1", device="x", framework="none",
                      regressors=_dummy_regressors(), fusion_rules=FusionRules.default(),
                      cold_regressors=_dummy_regressors())


def test_builtin_x86_predictor_holds_a_fitted_cache_model():
    from nnmeter_nas import load_predictor

    p = load_predictor("x86avx512cpu_onnxruntime")
    cm = p.package.cache_model
    assert cm is not None and set(p.package.cold_regressors) >= {"conv-bn-relu",
                                                                 "dwconv-bn-relu", "fc"}
    assert cm.info["networks"] >= 50 and cm.info["fit_rmspe"] < cm.info["warm_only_rmspe"]


@pytest.mark.slow
def test_two_regime_build_end_to_end(tmp_path):
    """Two tiny builds (warm, and 4 MiB flushed before every run) joined into one package
    whose cache model is fitted on composed networks measured here."""
    from nnmeter_nas.builder import BuildConfig
    from nnmeter_nas.builder.backends import TimingPlan
    from nnmeter_nas.builder.cache_fit import build_two_regimes, join_regimes

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(FusionRules.default().to_dict()))
    cfg = BuildConfig(name="tiny2", work_dir=tmp_path / "work", output=tmp_path / "pkg",
                      specs=["conv-bn-relu", "dwconv-bn-relu", "fc"], n_prior=24,
                      min_per_spec=8, adaptive_rounds=0, variant_fraction=0.0,
                      fusion_rules=rules, plan=TimingPlan.quick("thread"),
                      candidates=("rf",), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path, cm = build_two_regimes(cfg, cold_flush_mb=4.0, networks=8, passes=2)
    pkg = PredictorPackage.load(path)
    assert pkg.manifest["format_version"] == 2 and pkg.cache_model == cm
    assert set(pkg.cold_regressors) == set(pkg.regressors) == {"conv-bn-relu",
                                                                "dwconv-bn-relu", "fc"}
    assert cm.info["networks"] == 8 and cm.info["cold_flush_mb"] == 4.0
    assert "calibrations" not in pkg.manifest
    assert pkg.manifest["source"]["cold_regime"]["backend"]["timing"]["flush_mb"] == 4.0
    # the cold regime's kernels were timed after the flush, the warm one's without
    store = tmp_path / "work" / "cold" / "measurements.jsonl"
    flushes = {json.loads(line).get("flush_mb") for line in store.read_text().splitlines()
               if '"type": "kernel"' in line or '"type":"kernel"' in line}
    assert flushes <= {4.0, cfg.cold_flush_mb} and 4.0 in flushes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bd = LatencyPredictor(pkg).predict_kernels(_net(), input_shape=(1, 3, 32, 32))
    assert bd.cold_share == pytest.approx(cm.cold_share(bd.weight_mib))
    # joining a package with itself: nothing colder to mix in
    warm = tmp_path / "work" / "warm-package"
    with pytest.raises(PackageError, match="not colder"):
        join_regimes(warm, warm, tmp_path / "x", networks=8, passes=1)
    with pytest.raises(PackageError, match="already holds two regimes"):
        join_regimes(path, warm, tmp_path / "x", networks=8, passes=1)


def test_cli_reports_the_weight_size_and_cold_share(tmp_path, capsys):
    from nnmeter_nas.cli import main
    from nnmeter_nas.graph.torch_export import export_onnx

    path = tmp_path / "net.onnx"
    path.write_bytes(export_onnx(_net(), (1, 3, 32, 32)).SerializeToString())
    assert main(["predict", str(path), "-d", "x86avx512cpu_onnxruntime", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["predictions"][0]
    assert out["weight_mib"] == pytest.approx(4 * (3 * 256 * 9 + 256 + 256 * 512 * 9 + 512
                                                   + 512 * 1000 + 1000) / 2 ** 20, rel=1e-6)
    assert 0.0 < out["cold_share"] < 1.0
    assert main(["predict", str(path), "-d", "x86avx512cpu_onnxruntime", "--kernels"]) == 0
    assert "of their cold-cache extra (cache model)" in capsys.readouterr().out


@pytest.mark.slow
def test_cache_model_predictor_table_and_table_scores_match_full_prediction(one_torch_thread):
    """A latency table of a two-regime (cache-model) predictor sums kernels predicted at the
    covering samples' weight sizes; a candidate of other weight size is predicted whole in
    full mode. On SPOS (32x32 stem; the weights, 4 to 8 MiB, are SPOS's own, where the cold
    share moves) they agree within 3%,
    and the cache model does change the figures (so the check has something to catch)."""
    pd = pytest.importorskip("pandas")
    from nnmeter_nas import load_predictor
    from nnmeter_nas.parallel import score

    pred = load_predictor("x86avx512cpu_onnxruntime")
    assert pred.package.cache_model is not None
    warm = LatencyPredictor(pred.package, cache_model=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = score("spos-small", n=400, seed=11, devices=[pred], in_process=True, progress=False)
        picks = table.iloc[np.argsort(table[f"{pred.device}_ms"].to_numpy())[[0, 133, 266, 399]]]
        labels = [f"layer_{i}" for i in range(1, 21)]
        samples = picks[labels].astype(str).to_dict("records")
        full = score("spos-small", samples, devices=[pred], mode="full", in_process=True,
                     progress=False)
        warm_full = score("spos-small", samples, devices=[warm], mode="full", in_process=True,
                          progress=False)
    col = f"{pred.device}_ms"
    assert isinstance(full, pd.DataFrame) and len(full) == 4
    np.testing.assert_allclose(picks[col].to_numpy(), full[col].to_numpy(), rtol=0.03)
    # the cold share is not negligible here: warm-only prediction differs by more than 3%
    assert np.max(np.abs(warm_full[col].to_numpy() / full[col].to_numpy() - 1)) > 0.03


def test_latency_table_warning_blames_the_cache_model_not_the_layers(one_torch_thread,
                                                                     dummy_predictor):
    """With a cache-model predictor every kernel's latency depends on the whole network's
    weights, so a table's fixed part varies across architectures; the warning used to say that
    "some layers outside the choice points depend on the choices", which no layer of SPOS does.
    The same table on a predictor without a cache model has a constant fixed part."""
    pytest.importorskip("nni")
    from nnmeter_nas import load_predictor
    from nnmeter_nas.nni import LatencyProfiler
    from nnmeter_nas.search_spaces import SPOSSpace

    pred = load_predictor("x86avx512cpu_onnxruntime")
    assert pred.uses_cache_model and not dummy_predictor.uses_cache_model
    assert not LatencyPredictor(pred.package, cache_model=False).uses_cache_model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prof = LatencyProfiler(SPOSSpace(small_input=True, width_mult=0.25),
                               [pred, dummy_predictor], (1, 3, 32, 32))
    spread = prof.table.meta["build"]["fixed_spread_ms"]
    assert spread[pred.device] > 1e-6 and spread["dummy"] == pytest.approx(0.0, abs=1e-12)
    texts = [str(w.message) for w in caught if "latency table of SPOSSpace" in str(w.message)]
    assert len(texts) == 1 and "The cache model of ['x86avx512cpu_onnxruntime']" in texts[0]
    assert "Some layers outside" not in texts[0]
