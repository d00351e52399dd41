"""The predictor builder: backend, store, kernel specs, fitting, fusion rules, end to end."""
from __future__ import annotations

import argparse
import json
import random
import warnings

import numpy as np
import pytest

from nnmeter_nas.builder.backends import (Measurement, OnnxRuntimeCPUBackend, TimingPlan,
                                          get_backend, list_backends, summarise)
from nnmeter_nas.builder.fitting import error_summary, fit_flops_baseline, fit_kernel
from nnmeter_nas.builder.kernel_specs import channel_range, default_specs
from nnmeter_nas.builder.measure import KernelMeasurer, config_key, is_harness_node
from nnmeter_nas.builder.store import MeasurementStore, StoreMismatchError
from nnmeter_nas.features import regressor_name
from nnmeter_nas.kernels import FusionRules

RULES = FusionRules.from_dict({
    **FusionRules.default().to_dict(),
    "BF_conv_add": {"obey": True}, "BF_conv_hswish": {"obey": True},
    "BF_dwconv_hswish": {"obey": True}})


def _tiny_backend() -> OnnxRuntimeCPUBackend:
    return OnnxRuntimeCPUBackend(plan=TimingPlan.quick("thread"))


# ----------------------------------------------------------------------------- backend
def test_summarise_median_spread_and_overhead():
    m = summarise([1.0, 2.0, 3.0, 4.0, 100.0], round_medians=[2.0, 3.5], overhead_ms=0.5,
                  wall_ms=[1.5] * 5, clock="thread")
    assert m.raw_ms == 3.0 and m.latency_ms == 2.5
    assert m.iqr_ms == pytest.approx(2.0) and m.mad_ms == pytest.approx(1.0)
    assert m.rounds_spread_ms == pytest.approx(1.5)
    assert m.wall_ms == 1.5 and m.clock == "thread" and m.n == 5
    with pytest.raises(ValueError):
        summarise([])


def test_timing_plan_rejects_unknown_clock():
    with pytest.raises(ValueError, match="clock"):
        TimingPlan(clock="cycles")


def test_onnxruntime_backend_measures_and_profiles():
    import torch

    from nnmeter_nas.builder.onnx_utils import export_onnx

    assert "onnxruntime-cpu" in list_backends()
    b = get_backend("onnxruntime-cpu", plan=TimingPlan.quick("thread"))
    assert b.settings["intra_op_num_threads"] == 1
    assert b.settings["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert b.calibrate_overhead(repeats=1) > 0
    small = export_onnx(torch.nn.Conv2d(8, 8, 1), [[1, 8, 8, 8]])
    big = export_onnx(torch.nn.Conv2d(32, 32, 3, padding=1), [[1, 32, 28, 28]])
    ms = b.measure_many([small, big])
    assert all(isinstance(m, Measurement) and m.latency_ms > 0 for m in ms)
    assert ms[1].raw_ms > 3 * ms[0].raw_ms  # 3x3x32 conv on 28x28 vs a 1x1x8 one on 8x8
    nodes = b.profile_nodes(big, runs=3)
    assert any(n.op_type == "Conv" for n in nodes)
    # onnxruntime converts around its blocked-layout convolution at the model's boundary
    boundary = [n for n in nodes if is_harness_node(n)]
    assert boundary and all(n.op_type.startswith("Reorder") for n in boundary)
    with pytest.raises(ValueError, match="threads"):
        OnnxRuntimeCPUBackend(threads=0)


# ----------------------------------------------------------------------------- store
def test_store_appends_resumes_and_tolerates_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    header = {"name": "onnxruntime-cpu", "version": "1", "intra_op_num_threads": 1}
    s = MeasurementStore(path, header=header)
    s.append({"key": "a", "regressor": "relu", "latency_ms": 1.0})
    s.append({"key": "b", "regressor": "relu", "latency_ms": 2.0})
    # the process dies mid-write
    with open(path, "ab") as fh:
        fh.write(b'{"key": "c", "regre')
    s2 = MeasurementStore(path, header=header)
    assert len(s2) == 2 and "a" in s2 and "c" not in s2
    s2.append({"key": "c", "regressor": "relu", "latency_ms": 3.0})
    s3 = MeasurementStore(path, header=header)
    assert [r["key"] for r in s3.records()] == ["a", "b", "c"]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    with pytest.raises(StoreMismatchError, match="intra_op_num_threads"):
        MeasurementStore(path, header={**header, "intra_op_num_threads": 4})
    # a corrupt line in the middle is an error, not silently skipped
    lines = path.read_text().splitlines()
    lines[1] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        MeasurementStore(path)


def test_training_data_normalises_each_batch_by_its_reference_time(tmp_path):
    from nnmeter_nas.builder import BuildConfig
    from nnmeter_nas.builder.build import Builder

    header = {"name": "onnxruntime-cpu", "version": "1", "intra_op_num_threads": 1}
    s = MeasurementStore(tmp_path / "m.jsonl", header=header)
    # three quiet batches (reference 1.0 ms) and one slowed by 20% (kernel and reference)
    for i, (lat, ref) in enumerate([(2.0, 1.0), (2.0, 1.0), (2.0, 1.0), (2.4, 1.2)]):
        s.append({"key": str(i), "regressor": "conv", "features": [float(i)],
                  "latency_ms": lat, "ref_ms": ref, "phase": "prior"})
    s.append({"key": "noref", "regressor": "conv", "features": [9.0], "latency_ms": 5.0,
              "phase": "prior"})
    # a batch timed with caches flushed: its reference is slower, and is compared with the
    # other flushed batches only
    s.append({"key": "cold", "regressor": "conv", "features": [8.0], "latency_ms": 7.0,
              "ref_ms": 1.3, "flush_mb": 64.0, "phase": "prior"})
    cfg = BuildConfig(name="t", work_dir=tmp_path / "w", backend_options={"threads": 1})
    _, y, _ = Builder(cfg).training_data(s, "conv")
    np.testing.assert_allclose(y, [2.0, 2.0, 2.0, 2.0, 5.0, 7.0])
    raw = BuildConfig(name="t", work_dir=tmp_path / "w", backend_options={"threads": 1},
                      reference_normalize=False)
    _, y, _ = Builder(raw).training_data(s, "conv")
    np.testing.assert_allclose(y, [2.0, 2.0, 2.0, 2.4, 5.0, 7.0])


def test_fit_all_normalises_with_the_reference_medians_computed_once(tmp_path, monkeypatch):
    """fit_all computes the store's reference medians once for every regressor, and fits
    each on the same data as training_data computing them itself."""
    from nnmeter_nas.builder import BuildConfig, build
    from nnmeter_nas.builder.build import Builder

    s = MeasurementStore(tmp_path / "m.jsonl", header={"name": "onnxruntime-cpu"})
    rng = np.random.default_rng(0)
    for reg in ("conv", "fc", "relu"):
        for i in range(6):
            ref = float(rng.uniform(0.9, 1.25))  # batches timed in different machine states
            s.append({"key": f"{reg}{i}", "regressor": reg, "features": [float(i), 1.0],
                      "latency_ms": 1.0 + i * ref, "ref_ms": ref,
                      "flush_mb": 64.0 if i % 3 == 0 else 0.0,
                      "phase": "prior" if i < 4 else "variants"})
    b = Builder(BuildConfig(name="t", work_dir=tmp_path / "w", backend_options={"threads": 1}))
    want = {reg: b.training_data(s, reg, ["prior", "variants"]) for reg in ("conv", "fc", "relu")}
    calls, seen = [], {}
    real = build.reference_medians
    monkeypatch.setattr(build, "reference_medians", lambda st: calls.append(1) or real(st))
    monkeypatch.setattr(build, "fit_kernel",
                        lambda reg, X, y, **kw: seen.setdefault(reg, (X, y)) and reg)
    assert b.fit_all(s, ["prior", "variants"], quick=True) == {r: r for r in want}
    assert len(calls) == 1
    for reg, (X, y, _) in want.items():
        np.testing.assert_array_equal(seen[reg][0], X)
        np.testing.assert_array_equal(seen[reg][1], y)
    raw = [r["latency_ms"] for r in want["conv"][2]]
    assert not np.allclose(want["conv"][1], raw)  # the check compares normalised latencies


# ----------------------------------------------------------------------------- specs
def test_channel_range_grows_as_maps_shrink():
    lo224, hi224 = channel_range(224)
    lo7, hi7 = channel_range(7)
    assert hi7 > hi224 and lo7 > lo224
    assert channel_range(20)[1] > channel_range(40)[1]


def test_specs_sample_within_limits_and_respect_rules():
    rng = random.Random(0)
    no_add = FusionRules.from_dict({k: v for k, v in RULES.to_dict().items()
                                    if k not in ("BF_conv_add", "BF_conv_hswish")})
    spec = default_specs(no_add)["conv-bn-relu"]
    cfgs = [spec.sample(rng) for _ in range(300)]
    assert all(spec.flops(c) <= spec.max_flops for c in cfgs)
    assert all(c["n_add"] == 0 and c["act"] != "hswish" for c in cfgs)
    assert {c["k"] for c in cfgs} >= {1, 3, 5, 7} and {c["s"] for c in cfgs} == {1, 2}
    assert any(c["groups"] > 1 for c in cfgs)
    for c in cfgs[:50]:
        n = spec.neighbour(c, rng)
        assert n != c and spec.flops(n) <= spec.max_flops


@pytest.mark.parametrize("name", ["conv-bn-relu", "spos-shuffle", "concat", "se", "fc"])
def test_engine_finds_the_kernel_each_spec_builds(name):
    specs = default_specs(RULES)
    spec = specs[name]
    m = KernelMeasurer(_tiny_backend(), RULES)
    rng = random.Random(3)
    cfg = spec.sample(rng)
    if name == "conv-bn-relu":  # a residual conv with a fused add
        cfg.update(hw=14, cin=32, cout=32, s=1, k=3, groups=1, n_add=1, act="relu")
    if name == "fc":
        cfg.update(cin=256, cout=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = m.prepare(spec, cfg)
    assert p.regressor == (spec.regressor or regressor_name(p.kernel_type))
    if name == "conv-bn-relu":
        assert p.kernel_type == "conv-add-relu"
        assert p.features[:5] == [14, 32, 32, 3, 1]
    if name == "spos-shuffle":
        assert p.regressor in spec.folds
    if name == "fc":
        assert p.features[:2] == [256, 100]
    assert isinstance(p.model, bytes) and len(p.model) > 100


# ----------------------------------------------------------------------------- fitting
@pytest.mark.slow
def test_fit_kernel_picks_by_validation_and_bounds_size():
    rng = np.random.default_rng(0)
    X = rng.uniform([7, 8], [112, 512], size=(120, 2))
    y = 1e-5 * X[:, 0] ** 2 * X[:, 1] * np.exp(rng.normal(0, 0.02, 120))
    fit = fit_kernel("relu", X, y, candidates=("rf", "gbm-log-d1"), folds=3, seed=0)
    assert set(fit.candidates) == {"rf", "gbm-log-d1"}
    assert fit.validation["rmspe"] == min(c["rmspe"] for c in fit.candidates.values())
    # latency ~ hw^2 * c: boosted stumps on log-latency (additive in log space) beat a
    # forest on raw latency by far with 120 samples over four decades
    assert fit.model == "gbm-log-d1"
    assert fit.validation["rmspe"] < 0.4 and fit.n_train == 120
    assert fit.feature_range["min"] == X.min(axis=0).tolist()
    pred = fit.ensemble.predict(X)
    assert error_summary(y, pred)["rmspe"] < fit.validation["rmspe"]  # in-sample is better
    small = fit_kernel("relu", X[:40], y[:40], candidates=("rf",), folds=2, max_bytes=10_000)
    assert small.ensemble.n_trees < 60  # pruned from 60 trees to fit the size bound
    assert len(small.ensemble.to_npz_bytes()) <= 10_000 or small.ensemble.n_trees == 4
    with pytest.raises(ValueError, match="> 0"):
        fit_kernel("relu", X[:5], -y[:5])


def test_flops_baseline_recovers_a_line():
    f = np.array([0.0, 1e6, 2e6, 4e6])
    base = fit_flops_baseline(f, 0.5 + 2e-6 * f)
    assert base["ms_per_flop"] == pytest.approx(2e-6) and base["intercept_ms"] == \
        pytest.approx(0.5)


# ----------------------------------------------------------------------------- fusion
def test_fusion_rules_are_measured_per_pair():
    from nnmeter_nas.builder.fusion import FusionTestConfig, detect_fusion_rules

    b = _tiny_backend()
    b.calibrate_overhead(repeats=1)
    rules, raw = detect_fusion_rules(b, pairs=[("conv", "relu"), ("relu", "conv")],
                                     config=FusionTestConfig(hw=16, channels=16), repeats=1,
                                     plan=TimingPlan.quick("thread"))
    assert set(raw) == {"BF_conv_relu", "BF_relu_conv", "MON"}
    for name in ("BF_conv_relu", "BF_relu_conv"):
        lat = raw[name]["latency"]
        assert lat["block"] > 0 and isinstance(raw[name]["obey"], bool)
    # what onnxruntime itself reports: relu fuses into the preceding conv, not the next one
    assert raw["BF_conv_relu"]["backend_fused"] is True
    assert raw["BF_relu_conv"]["backend_fused"] is False
    assert rules.mon == 0


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_build_end_to_end_and_resume(tmp_path):
    import torch

    from nnmeter_nas.builder import BuildConfig, build_predictor
    from nnmeter_nas.packages.format import PredictorPackage
    from nnmeter_nas.predictor import LatencyPredictor

    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(RULES.to_dict()))
    cfg = BuildConfig(name="tiny", work_dir=tmp_path / "work", output=tmp_path / "pkg",
                      specs=["dwconv-bn-relu", "global-avgpool", "fc"], n_prior=15,
                      min_per_spec=5, adaptive_rounds=1, adaptive_fraction=0.34,
                      fusion_rules=rules_file, plan=TimingPlan.quick("thread"),
                      candidates=("rf", "et-log"), flush_mb=8.0, variant_fraction=0.5,
                      progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_predictor(cfg)
    assert set(res.fits) == {"dwconv-bn-relu", "global-avgpool", "fc"}
    store = MeasurementStore(tmp_path / "work" / "measurements.jsonl")
    recs = store.records()
    assert len(recs) == res.n_measurements >= 15
    # flush_mb: every kernel timed after writing 8 MiB; the classifier (cold weights) after
    # cold_flush_mb, its default 64 MiB being the larger
    assert {r["flush_mb"] for r in recs if r["spec"] != "fc"} == {8.0}
    assert {r["flush_mb"] for r in recs if r["spec"] == "fc"} == {cfg.cold_flush_mb} == {64.0}
    assert {r["phase"] for r in recs} == {"prior", "variants", "adaptive-1"}
    # variants: prior depthwise convolutions measured again with every other activation
    prior_dw = {json.dumps({**r["config"], "act": None}, sort_keys=True): r["config"]["act"]
                for r in recs if r["phase"] == "prior" and r["spec"] == "dwconv-bn-relu"}
    variants = [r for r in recs if r["phase"] == "variants"]
    assert variants and all(r["spec"] == "dwconv-bn-relu" for r in variants)
    for r in variants:
        base = json.dumps({**r["config"], "act": None}, sort_keys=True)
        assert base in prior_dw and prior_dw[base] != r["config"]["act"]
    assert {r["config"]["act"] for r in variants} >= {"relu6"}
    assert all(r["latency_ms"] > 0 and r["raw_ms"] >= r["latency_ms"] for r in recs)
    # per-call cost timed in each batch, kernel share from the operator profile, machine state
    assert all(0 < r["overhead_ms"] and 0 < r["share"] <= 1 for r in recs)
    assert all(r["ref_ms"] > 0 and r["loadavg"] is not None for r in recs)
    # the global-average-pool kernel feeds a classifier: its flatten runs outside onnxruntime's
    # blocked layout, so part of the measured model is harness (layout conversion)
    assert any(r["harness_ms"] > 0 for r in recs)
    assert len({config_key(r["spec"], r["config"]) for r in recs}) == len(recs)

    pkg = PredictorPackage.load(res.package)
    man = pkg.manifest
    assert man["feature_set"] == "nnmeter-nas-3"
    assert man["kernels"]["dwconv-bn-relu"]["feature_names"][-3:] == ["groups", "act", "n_add"]
    assert man["source"]["backend"]["intra_op_num_threads"] == 1
    assert man["source"]["machine_state"]["reference_ms"]["median"] > 0
    gap = man["kernels"]["global-avgpool"]
    assert gap["validation"]["model"] in ("rf", "et-log") and gap["n_train"] >= 6
    assert gap["feature_range"]["max"][0] >= gap["feature_range"]["min"][0]
    assert "BF_dwconv_relu" in pkg.fusion_rules.to_dict()

    net = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False),
                              torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pred = LatencyPredictor(pkg, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernels = pred.predict_kernels(net, input_shape=(1, 32, 28, 28))
    assert [k.regressor for k in kernels] == ["dwconv-bn-relu", "global-avgpool"]
    assert all(k.status == "predicted" and k.latency_ms > 0 for k in kernels)

    # resume: nothing left to measure, same measurements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = build_predictor(cfg)
    assert again.n_measurements == res.n_measurements

    # refit: measures nothing, fits the stored timings (here without the reference
    # normalisation, so the kernel files change and the manifest says so)
    size_before = (tmp_path / "work" / "measurements.jsonl").stat().st_size
    from dataclasses import replace as _replace

    raw = build_predictor(_replace(cfg, output=tmp_path / "pkg-raw", reference_normalize=False),
                          refit=True)
    assert (tmp_path / "work" / "measurements.jsonl").stat().st_size == size_before
    assert raw.n_measurements == res.n_measurements and set(raw.fits) == set(res.fits)
    state = PredictorPackage.load(raw.package).manifest["source"]["machine_state"]
    assert state["kernel_latencies_normalized_to_ms"] is None
    assert man["source"]["machine_state"]["kernel_latencies_normalized_to_ms"]["8.0"] > 0
    with pytest.raises(FileNotFoundError, match="no measurements"):
        build_predictor(_replace(cfg, work_dir=tmp_path / "empty"), refit=True)

    # reuse under another feature set: same timings, features recomputed by the engine
    from dataclasses import replace

    from nnmeter_nas.builder import reuse_measurements

    cfg1 = replace(cfg, work_dir=tmp_path / "work1", output=None, feature_set="nnmeter-nas-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = reuse_measurements(cfg.work_dir, cfg1)
    assert kept == len(recs)
    old = {r["key"]: r for r in recs}
    new = MeasurementStore(tmp_path / "work1" / "measurements.jsonl").records()
    assert {r["key"] for r in new} == set(old)
    for r in new:
        assert r["latency_ms"] == old[r["key"]]["latency_ms"]
        if r["regressor"] == "dwconv-bn-relu":
            assert r["features"] == old[r["key"]]["features"][:7]
    with pytest.raises(FileExistsError):
        reuse_measurements(cfg.work_dir, cfg1)
    # timings taken with another cache flush are neither resumed nor reused
    with pytest.raises(StoreMismatchError, match="flush_mb"):
        build_predictor(replace(cfg, flush_mb=0.0))
    warm = replace(cfg, work_dir=tmp_path / "work2", output=None, flush_mb=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert reuse_measurements(cfg.work_dir, warm) == sum(r["spec"] == "fc" for r in recs)


def test_feature_set_v2_adds_memory_layout_and_fusion_features():
    import torch

    from nnmeter_nas.features import extract_features, feature_names
    from nnmeter_nas.graph.onnx_import import onnx_to_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.kernels import detect_kernels

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(12, 20, 3, 2, 1, groups=4)
            self.pool = torch.nn.MaxPool2d(3, 2, 1)

        def forward(self, x, y):
            return self.pool(torch.nn.functional.hardswish(self.conv(x) + y))

    proto = export_onnx(Net(), [(1, 12, 16, 16), (1, 20, 8, 8)])
    kernels = detect_kernels(onnx_to_graph(proto), RULES)
    conv, pool = kernels[0], kernels[-1]
    assert conv.type == "conv-add-hswish" and pool.type.startswith("maxpool")
    v1 = extract_features(conv, "nnmeter-nas-1")
    v2 = extract_features(conv, "nnmeter-nas-2")
    assert v2[:7] == v1 and len(v2) == len(feature_names("conv-bn-relu", "nnmeter-nas-2"))
    assert v2[7:] == [16 * 16 * 12 / 1e6, 8 * 8 * 20 / 1e6, 12, 4, 4, 2, 1]
    p2 = extract_features(pool, "nnmeter-nas-2")
    assert p2[5:] == [8 * 8 * 20 / 1e6, 4 * 4 * 20 / 1e6, 4]
    gap_like = extract_features(kernels[0], "nnmeter-2.0")
    assert len(gap_like) == 7


def test_feature_set_v3_tells_relu6_from_relu():
    import torch

    from nnmeter_nas.features import extract_features, feature_names
    from nnmeter_nas.graph.onnx_import import onnx_to_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.kernels import detect_kernels

    acts = {}
    for act in (torch.nn.ReLU, torch.nn.ReLU6):
        net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, 1, 1), act(),
                                  torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16), act())
        kernels = detect_kernels(onnx_to_graph(export_onnx(net, (1, 8, 14, 14))), RULES)
        assert [k.type for k in kernels] == ["conv-relu", "dwconv-relu"]  # nn-Meter's types
        acts[act.__name__] = kernels
    act_i = feature_names("conv-bn-relu", "nnmeter-nas-3").index("act")
    for relu, relu6 in zip(acts["ReLU"], acts["ReLU6"]):
        assert "relu6" not in relu.attrs and relu6.attrs["relu6"] is True
        # nnmeter-nas-2 lumps the two (as nn-Meter does); nnmeter-nas-3 does not
        assert extract_features(relu, "nnmeter-nas-2") == extract_features(relu6, "nnmeter-nas-2")
        v_relu, v_relu6 = (extract_features(k, "nnmeter-nas-3") for k in (relu, relu6))
        assert v_relu[act_i] == 1 and v_relu6[act_i] == 4
        assert v_relu[:act_i] == v_relu6[:act_i] == extract_features(relu, "nnmeter-nas-2")[:act_i]


def test_cli_parser_and_kernel_list(capsys):
    from nnmeter_nas.builder.cli import add_build_parser, run_build

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_build_parser(sub)
    args = parser.parse_args(["build", "mycpu", "--samples", "10", "--threads", "2",
                              "--kernels", "relu,fc", "--list-kernels"])
    assert args.func is run_build and args.samples == 10 and args.threads == 2
    assert run_build(args) == 0
    out = capsys.readouterr().out
    assert "conv-bn-relu" in out and "spos-shuffle" in out


def test_cli_cache_regimes_runs_both_builds_and_the_join(tmp_path, monkeypatch, capsys):
    from nnmeter_nas.builder import cache_fit
    from nnmeter_nas.builder.cli import add_build_parser, run_build
    from nnmeter_nas.cache_model import CacheModel

    seen = {}

    def fake(cfg, **kw):
        seen.update(cfg=cfg, **kw)
        return cfg.output, CacheModel(midpoint_mib=10.0, slope=1.0, info={"networks": 3})

    monkeypatch.setattr(cache_fit, "build_two_regimes", fake)
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers())
    args = parser.parse_args(["build", "mycpu", "-o", str(tmp_path / "pkg"), "--work-dir",
                              str(tmp_path / "w"), "--cache-regimes", "--cold-flush-mb", "8",
                              "--networks", "40", "--no-progress"])
    assert run_build(args) == 0
    assert seen["cold_flush_mb"] == 8.0 and seen["networks"] == 40
    assert seen["cfg"].output == tmp_path / "pkg" and seen["cfg"].flush_mb == 0.0
    assert "cache model: midpoint 10.0 MiB" in capsys.readouterr().err


# ----------------------------------------------------------------------------- hosts
def test_backend_records_the_instruction_set_and_store_refuses_another(tmp_path):
    from nnmeter_nas.builder.backends import OnnxRuntimeCPUBackend
    from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_isa

    isa = cpu_isa()
    assert isa in {"avx512", "avx2", "avx", "sse", "neon", "unknown"}
    settings = OnnxRuntimeCPUBackend(threads=1).settings
    assert settings["isa"] == isa
    path = tmp_path / "m.jsonl"
    MeasurementStore(path, header={**settings, "isa": "avx2"})
    # same CPU name, other instruction set: a resumed build must not mix the two
    with pytest.raises(StoreMismatchError, match="isa"):
        MeasurementStore(path, header={**settings, "isa": "avx512"})


def test_host_mismatch_names_the_settings_that_differ_from_the_build_host():
    from nnmeter_nas.builder.backends import host_mismatch

    built = {"processor": "AMD EPYC", "isa": "avx2", "version": "1.32.0",
             "intra_op_num_threads": 1}
    assert host_mismatch(built, dict(built)) == {}
    assert host_mismatch(built, {**built, "isa": "avx512"}) == {"isa": ("avx2", "avx512")}
    # a manifest from before the instruction set was recorded only compares what it has
    assert host_mismatch({"processor": "AMD EPYC"}, {**built, "isa": "avx512"}) == {}


def test_both_builtin_x86_predictors_load_and_predict():
    import torch

    from nnmeter_nas.packages.registry import builtin_dir
    from nnmeter_nas.predictor import LatencyPredictor

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.BatchNorm2d(16),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    preds = {}
    for isa in ("avx2", "avx512"):
        p = LatencyPredictor.from_path(builtin_dir() / f"x86{isa}cpu_onnxruntime")
        assert p.package.manifest["source"]["backend"]["isa"] == isa
        assert p.device == p.name  # tables and score columns are keyed by the device
        preds[isa] = p.predict(net, input_shape=(1, 3, 64, 64))
        assert 0.001 < preds[isa] < 10.0
    # the AVX-512 host is the faster one for the same kernels
    assert preds["avx512"] < preds["avx2"]


def test_kernel_specs_are_registered_with_keywords(monkeypatch):
    from nnmeter_nas.builder import kernel_specs as ks

    monkeypatch.setattr(ks, "_REGISTRY", dict(ks._REGISTRY))
    before = list(ks.kernel_specs())
    assert before[:3] == ["conv-bn-relu", "dwconv-bn-relu", "fc"] and len(before) == 21
    ks.register_kernel_spec("gelu", prior=ks._hwc_prior(), perturb=ks._hwc_perturb,
                            build=ks._relu_module, neighbours=lambda c: ([True], [True]),
                            flops=ks._hwc_flops, weight=0.5, doc="test spec")
    spec = ks.kernel_specs(RULES)["gelu"]
    assert spec.regressor == "gelu" and spec.weight == 0.5 and spec.sample(random.Random(0))
    with pytest.raises(ValueError, match="already registered"):
        ks.register_kernel_spec("gelu", prior=ks._hwc_prior(), perturb=ks._hwc_perturb,
                                build=ks._relu_module, neighbours=lambda c: ([True], [True]))
    with pytest.raises(TypeError, match="unknown fields"):
        ks.register_kernel_spec("x", prior=ks._hwc_prior(), perturb=ks._hwc_perturb,
                                build=ks._relu_module, neighbours=lambda c: ([True], [True]),
                                wieght=1.0)
    with pytest.raises(TypeError):  # fields are keywords, not five positional callables
        ks.KernelSpec("y", ks._hwc_prior(), ks._hwc_perturb, ks._relu_module, None)
