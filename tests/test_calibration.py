"""Per-space calibration: fitting, storing in a package, applying in the predictor."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nnmeter_nas.builder.calibrate import calibrate, fit_calibration, save_calibration
from nnmeter_nas.calibration import Calibration
from nnmeter_nas.errors import PackageError
from nnmeter_nas.packages.registry import builtin_dir
from nnmeter_nas.predictor import KernelBreakdown, KernelPrediction, LatencyPredictor


def _bd(parts: dict[str, list[float]], free_ms: float = 0.0) -> KernelBreakdown:
    ks = [KernelPrediction(name=f"{reg}#{i}", kernel_type=reg, regressor=reg, features=None,
                           latency_ms=ms, status="predicted", in_domain=True)
          for reg, lat in parts.items() for i, ms in enumerate(lat)]
    if free_ms:
        ks.append(KernelPrediction(name="reshape#0", kernel_type="reshape", regressor="reshape",
                                   features=None, latency_ms=free_ms, status="free",
                                   in_domain=None))
    return KernelBreakdown(ks, overhead_ms=0.01)


def _synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    bds, truth = [], []
    for _ in range(n):
        parts = {"conv": list(rng.uniform(0.05, 0.5, rng.integers(5, 30))),
                 "dwconv": list(rng.uniform(0.01, 0.1, rng.integers(2, 20))),
                 "relu": list(rng.uniform(0.001, 0.003, rng.integers(1, 5)))}
        bd = _bd(parts, free_ms=0.002)
        n_k = sum(len(v) for v in parts.values())
        truth.append(1.3 * sum(parts["conv"]) + 0.8 * sum(parts["dwconv"]) +
                     sum(parts["relu"]) + 0.004 * n_k + 0.002 + 0.01)
        bds.append(bd)
    return bds, np.asarray(truth)


def test_fit_recovers_the_scales_and_per_kernel_cost():
    bds, truth = _synthetic(40)
    cal = fit_calibration(bds, truth, prior=0.0, min_share=0.01, space="toy")
    assert cal.scale("conv") == pytest.approx(1.3, rel=1e-6)
    assert cal.scale("dwconv") == pytest.approx(0.8, rel=1e-6)
    assert cal.per_kernel_ms == pytest.approx(0.004, rel=1e-5)
    assert cal.info["fit_rmspe"] < 1e-8 < cal.info["uncalibrated_rmspe"]
    assert [cal.latency_ms(b, b.overhead_ms) for b in bds] == pytest.approx(list(truth))
    # the prior pulls towards 1 but barely moves a fit that 40 networks pin down
    cal_p = fit_calibration(bds, truth)
    assert cal_p.scale("conv") == pytest.approx(1.3, rel=0.02)
    # round trip
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_fit_keeps_scales_of_constant_parts_near_one_and_refuses_too_few_networks():
    bds, truth = _synthetic(30)
    # every network has the same classifier and pooling: two constant columns, which the
    # measurements cannot tell apart; the prior keeps both at 1 instead of any split
    for b in bds:
        for reg, ms in (("fc", 0.2), ("gap", 0.1)):
            b.append(KernelPrediction(name=f"{reg}#0", kernel_type=reg, regressor=reg,
                                      features=None, latency_ms=ms, status="predicted",
                                      in_domain=True))
    truth = truth + 0.3 + 2 * 0.004
    cal = fit_calibration(bds, truth, min_share=0.0)
    assert cal.scale("fc") == pytest.approx(1.0, abs=0.05)
    assert cal.scale("gap") == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="networks for"):
        fit_calibration(bds[:2], truth[:2])
    with pytest.raises(ValueError, match="positive"):
        fit_calibration(bds[:5], [1.0, 2.0, -1.0, 1.0, 1.0])


def test_calibration_is_stored_in_the_package_and_applied_per_kernel(tmp_path):
    pkg = tmp_path / "dev"
    shutil.copytree(builtin_dir() / "cortexA76cpu_tflite21", pkg)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1), torch.nn.BatchNorm2d(16),
                              torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, 1, 1),
                              torch.nn.ReLU()).eval()
    shape = (1, 3, 16, 16)
    base = LatencyPredictor.from_path(pkg)
    bd = base.predict_kernels(net, input_shape=shape)
    cal = Calibration(scales={"conv-bn-relu": 1.5}, default_scale=2.0, per_kernel_ms=0.01)
    save_calibration(pkg, "toy", cal)
    p = LatencyPredictor.from_path(pkg, calibration="toy")   # checksums still verify
    assert p.calibrations == ["toy"] and "calibration='toy'" in repr(p)
    got = p.predict_kernels(net, input_shape=shape)
    assert got.latency_ms == pytest.approx(cal.latency_ms(bd, bd.overhead_ms))
    for k0, k1 in zip(bd, got):
        if k0.status == "predicted":
            assert k1.latency_ms == pytest.approx(cal.kernel_ms(k0.regressor, k0.latency_ms))
    assert got.latency_ms != pytest.approx(bd.latency_ms)
    with pytest.raises(PackageError, match="no calibration 'spos'.*toy"):
        LatencyPredictor.from_path(pkg, calibration="spos")
    # fitting through the predictor: a calibrated predictor is refitted from its raw kernels
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, 1, 1), torch.nn.ReLU()).eval()
            for c in (8, 16, 24, 32, 48, 64)]
    raw = [base.predict(m, input_shape=shape) for m in nets]
    fitted = calibrate(p, nets, [1.25 * r for r in raw], input_shape=shape, prior=0.0)
    assert fitted.info["fit_rmspe"] < 1e-6
    with pytest.raises(ValueError, match="calibration name"):
        save_calibration(pkg, "../x", cal)


def test_device_specs_name_a_calibration_in_the_api_and_the_cli(tmp_path, capsys):
    from nnmeter_nas.cli import main
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.parallel.api import resolve_devices

    pkg = tmp_path / "dev"
    shutil.copytree(builtin_dir() / "cortexA76cpu_tflite21", pkg)
    save_calibration(pkg, "toy", Calibration(scales={}, default_scale=2.0))
    plain, cal = resolve_devices([str(pkg)])[0], resolve_devices(f"{pkg}@toy")[0]
    assert plain.calibration is None and cal.calibration == "toy"
    assert resolve_devices("x86avx512cpu_onnxruntime@spos")[0].calibration == "spos"
    with pytest.raises(PackageError, match="no calibration 'nope'"):
        resolve_devices(f"{pkg}@nope")

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1), torch.nn.ReLU()).eval()
    model = tmp_path / "m.onnx"
    model.write_bytes(export_onnx(net, (1, 3, 16, 16)).SerializeToString())
    got = {}
    for spec in (str(pkg), f"{pkg}@toy"):
        assert main(["predict", str(model), "-d", spec, "--json"]) == 0
        got[spec] = json.loads(capsys.readouterr().out)["predictions"][0]["latency_ms"]
    fixed = plain.network_overhead_ms
    assert got[f"{pkg}@toy"] - fixed == pytest.approx(2.0 * (got[str(pkg)] - fixed))
    assert main(["predict", str(model), "-d", f"{pkg}@nope"]) == 1
    assert "no calibration 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_calibrates_a_builtin_predictor_on_its_host_into_the_user_cache(tmp_path,
                                                                            monkeypatch, capsys):
    """`predictors calibrate`: measure random NB201 networks with the package's own backend,
    fit, store in an installed copy (the built-in package is left as it is)."""
    from nnmeter_nas import load_predictor
    from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_isa
    from nnmeter_nas.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("NNMETER_NAS_HOME", str(home))
    name = f"x86{cpu_isa()}cpu_onnxruntime"
    builtin = builtin_dir() / name / "manifest.json"
    if not builtin.exists():
        pytest.skip(f"no built-in predictor for this host's instruction set ({cpu_isa()})")
    before = builtin.read_bytes()
    assert main(["predictors", "calibrate", name, "--space", "nb201", "--networks", "12",
                 "--passes", "2", "--pause", "0", "--name", "toy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"calibration 'toy' of {name} fitted on 12 networks" in out and f"{name}@toy" in out
    assert builtin.read_bytes() == before
    p = load_predictor(name, calibration="toy")
    assert home in p.package.path.parents
    info = p.package.manifest["calibrations"]["toy"]["info"]
    assert info["networks"] == 12 and info["passes"] == 2 and info["measured_on"]["isa"] == \
        cpu_isa()
    # your own networks as ONNX files; the installed copy is updated in place
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.search_spaces.sampling import random_networks

    files = []
    for i, (_, make, shape) in enumerate(random_networks("nb201", 12, seed=5)):
        files.append(tmp_path / f"net{i}.onnx")
        files[-1].write_bytes(export_onnx(make(), shape).SerializeToString())
    assert main(["predictors", "calibrate", name, "--models", *map(str, files),
                 "--passes", "2", "--pause", "0", "--name", "toy2", "--quiet"]) == 0
    assert load_predictor(name).package.path == p.package.path
    assert {"toy", "toy2"} <= set(load_predictor(name).calibrations)


def test_cli_calibrate_refuses_what_it_cannot_measure(tmp_path, monkeypatch, capsys):
    from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_isa
    from nnmeter_nas.cli import main
    from nnmeter_nas.search_spaces import sampling

    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))

    def no_networks(*args, **kwargs):
        raise AssertionError("networks were drawn before the host was checked")

    monkeypatch.setattr(sampling, "random_networks", no_networks)  # the refusal is cheap
    # an nn-Meter device records no backend: it can only be measured on the device itself
    assert main(["predictors", "calibrate", "cortexA76cpu_tflite21", "--space", "nb201"]) == 1
    assert "records no measurement backend" in capsys.readouterr().err
    # the other x86 predictor was built on another host
    other = "x86avx2cpu_onnxruntime" if cpu_isa() == "avx512" else "x86avx512cpu_onnxruntime"
    assert main(["predictors", "calibrate", other, "--space", "nb201"]) == 1
    assert "was built on another host" in capsys.readouterr().err
    assert main(["predictors", "calibrate", other]) == 2
    assert "either --space" in capsys.readouterr().err
    assert main(["predictors", "calibrate", other, "--models", "nope.onnx"]) == 1
    assert "no such model file: nope.onnx" in capsys.readouterr().err
    assert main(["predictors", "calibrate", other, "--space", "imagenet"]) == 2


def test_calibrated_specs_reach_the_nni_adapters_and_key_scoring_jobs():
    from nnmeter_nas.errors import UnknownPredictorError
    from nnmeter_nas.nni.table_builder import resolve_predictors
    from nnmeter_nas.packages.registry import load_predictor_spec
    from nnmeter_nas.parallel.api import _package_fingerprint

    name = "x86avx512cpu_onnxruntime"
    cal, = resolve_predictors(f"{name}@spos")
    plain, = resolve_predictors(name)
    assert cal.calibration == "spos" and plain.calibration is None
    # a scoring run keyed by the uncalibrated predictor does not resume the calibrated one
    assert _package_fingerprint(cal) != _package_fingerprint(plain)
    assert _package_fingerprint(load_predictor_spec(f"{name}@nb201")) != \
        _package_fingerprint(cal)
    with pytest.raises(UnknownPredictorError, match="NAME@CALIBRATION"):
        load_predictor_spec(f"{name}@")
