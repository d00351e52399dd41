"""A new user's walkthrough of building and calibrating a predictor of their own CPU
(`nnmeter-nas predictors build` / `calibrate`, the builder API): each test is a problem that
walkthrough found. Bad settings are refused before anything is measured, naming the option;
an interrupted build says where its measurements are and how to resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnmeter_nas.cli import main
from nnmeter_nas.errors import BuildConfigError, CalibrationError, NnMeterNasError

ROOT = Path(__file__).resolve().parents[1]
X86 = "x86avx2cpu_onnxruntime"


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("nnmeter-nas: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_measuring(monkeypatch, tmp_path):
    """Fail the test if the build gets as far as measuring (or creating a backend)."""
    import nnmeter_nas.builder.build as build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(build, "build_predictor", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(build, "get_backend", lambda *a, **k: pytest.fail("backend made"))


def test_list_kernels_needs_no_predictor_name(capsys):
    """`predictors build --list-kernels` was refused: 'the following arguments are required:
    name'."""
    assert main(["predictors", "build", "--list-kernels"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conv-bn-relu ") and "\nrelu " in out
    # and every spec says what it measures (ten of them printed their name alone)
    assert all(len(line.split(None, 1)) == 2 for line in out.splitlines()), out


def test_build_without_a_name_is_a_usage_error(no_measuring, capsys):
    assert main(["predictors", "build", "--kernels", "relu"]) == 2
    assert "give the predictor's name" in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize("args, option, was", [
    (["--repeats", "0"], "--repeats", "'summarise: no timed runs' after detecting fusion rules"),
    (["--repeats", "-2"], "--repeats", "same"),
    (["--samples", "0"], "--samples", "accepted: 20 configurations per spec"),
    (["--samples", "-5"], "--samples", "same"),
    (["--batch", "0"], "--batch", "'range() arg 3 must not be zero' after fusion rules"),
    (["--threads", "0"], "--threads", "named, but as 'onnxruntime backend: threads'"),
    (["--adaptive-rounds", "-1"], "--adaptive-rounds", "accepted silently"),
    (["--adaptive-fraction", "-1"], "--adaptive-fraction", "accepted silently"),
    (["--adaptive-fraction", "nan"], "--adaptive-fraction", "accepted silently"),
    (["--time-budget", "0"], "--time-budget", "fusion rules measured, then 'package: None'"),
    (["--time-budget", "-1"], "--time-budget", "same"),
    (["--cache-regimes", "--networks", "3"], "--networks",
     "'3 networks: fit a cache model on a hundred or so' after both builds"),
    (["--cache-regimes", "--cold-flush-mb", "-3"], "--cold-flush-mb",
     "'cold_flush_mb (-3.0) must exceed flush_mb (0.0)'"),
    (["--kernels", ""], "--kernels", "an empty list built every kernel spec (45 min)"),
    (["--kernels", ",,"], "--kernels", "same"),
])
def test_bad_counts_are_refused_naming_the_option(no_measuring, capsys, args, option, was):
    rc = main(["predictors", "build", "mycpu", "--no-progress", *args])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and f"argument {option}:" in line, line


def test_unknown_kernel_spec_is_named_before_anything_is_measured(no_measuring, capsys):
    """Was `unknown kernel specs ['rleu']; known: [...]` (a ValueError), after timing the
    backend's per-call cost and measuring the fusion rules (20 s here, minutes on a device)."""
    rc = main(["predictors", "build", "mycpu", "--kernels", "relu,rleu", "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and "unknown kernel spec 'rleu'; did you mean 'relu'?" in line
    assert "--list-kernels" in line


def test_builder_api_refuses_bad_settings_before_measuring(tmp_path):
    from nnmeter_nas.builder import BuildConfig
    from nnmeter_nas.builder.backends import TimingPlan
    from nnmeter_nas.builder.build import Builder

    for bad in ({"n_prior": 0}, {"batch": 0}, {"adaptive_rounds": -1},
                {"adaptive_fraction": -0.1}, {"time_budget_s": 0.0}, {"specs": []},
                {"specs": "relu"}, {"flush_mb": float("nan")}):
        with pytest.raises(BuildConfigError, match=f"BuildConfig.{next(iter(bad))}"):
            BuildConfig(name="x", work_dir=tmp_path, **bad)
    for bad in ({"rounds": 0}, {"runs_per_round": 0}, {"warmup": -1}):
        with pytest.raises(BuildConfigError, match=f"TimingPlan.{next(iter(bad))}"):
            TimingPlan(**bad)
    cfg = BuildConfig(name="x", work_dir=tmp_path / "w", specs=["relu", "rleu"])
    with pytest.raises(BuildConfigError, match="did you mean 'relu'"):
        Builder(cfg, backend=object())
    assert not (tmp_path / "w").exists()
    assert issubclass(BuildConfigError, (NnMeterNasError, ValueError))


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden"])
def test_predictor_name_that_is_no_plain_folder_name_is_refused(no_measuring, tmp_path,
                                                                 capsys, name):
    """`build ../evil` installed the package beside the user cache's predictors folder, and
    `build .hidden` one the registry never lists, both after the whole build."""
    rc = main(["predictors", "build", name, "--kernels", "relu", "--no-progress"])
    assert rc == 1 and f"invalid predictor name {name!r}" in _error_line(
        capsys.readouterr().err)
    assert not (tmp_path / "home").exists()


def test_output_that_cannot_be_written_is_named_before_measuring(no_measuring, tmp_path,
                                                                  capsys, monkeypatch):
    """`-o FILE/sub` and an NNMETER_NAS_HOME under a file were refused by write_package, once
    every kernel had been measured."""
    (tmp_path / "afile").write_text("x")
    rc = main(["predictors", "build", "mycpu", "-o", str(tmp_path / "afile" / "sub"),
               "--kernels", "relu", "--no-progress"])
    assert rc == 1 and "cannot write the package to" in _error_line(capsys.readouterr().err)
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "afile" / "home"))
    rc = main(["predictors", "build", "mycpu", "--kernels", "relu", "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 1 and "cannot install predictors into" in line and "NNMETER_NAS_HOME" in line
    assert (tmp_path / "afile").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no probe left


def test_work_dir_that_is_a_file_is_named(tmp_path, capsys, monkeypatch):
    """Was `[Errno 17] File exists: 'afile'` (nothing said it was the work folder)."""
    import nnmeter_nas.builder.build as build

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(build.Builder, "__init__", lambda self, cfg, **k: setattr(
        self, "cfg", cfg))
    rc = main(["predictors", "build", "mycpu", "-o", str(tmp_path / "pkg"), "--work-dir",
               "afile", "--kernels", "relu", "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot keep the build's measurements in afile: it is a file" in line
    assert "--work-dir" in line and (tmp_path / "afile").read_text() == "x"


def _interrupt_build(monkeypatch, tmp_path, sig):
    import nnmeter_nas.builder.build as build

    monkeypatch.chdir(tmp_path)

    def measuring(cfg, **kwargs):
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), sig)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the build")

    monkeypatch.setattr(build, "build_predictor", measuring)
    return ["predictors", "build", "mycpu", "-o", str(tmp_path / "pkg"), "--work-dir",
            str(tmp_path / "work"), "--kernels", "relu", "--no-progress"]


def test_ctrl_c_says_where_the_measurements_are_and_how_to_resume(tmp_path, capsys,
                                                                   monkeypatch):
    """Was `nnmeter-nas: interrupted` alone."""
    assert main(_interrupt_build(monkeypatch, tmp_path, signal.SIGINT)) == 130
    err = capsys.readouterr().err
    assert f"kept under {tmp_path / 'work'}; run the same command again to resume" in err


def test_sigterm_stops_the_build_as_ctrl_c_does(tmp_path, capsys, monkeypatch):
    """SIGTERM killed the process where it stood: no word, and a package being written left
    its temporary folder behind. Now it unwinds (write_package cleans up), says how to
    resume, exits 143 and restores the previous handler."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        main(_interrupt_build(monkeypatch, tmp_path, signal.SIGTERM))
    assert exc.value.code == 143
    assert "run the same command again to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_mid_measurement_then_rerun_resumes(tmp_path):
    """A real build (relu only, the built-in package's fusion rules) terminated mid-prior and
    run again: the finished measurements are kept and not measured again, no package or
    temporary folder is left by the stopped run, and the rerun writes one that loads."""
    rules = ROOT / "nnmeter_nas" / "data" / "predictors" / X86 / "fusion_rules.json"
    argv = [sys.executable, "-m", "nnmeter_nas.cli", "predictors", "build", "tinyrelu",
            "-o", str(tmp_path / "pkg"), "--work-dir", str(tmp_path / "work"), "--kernels",
            "relu", "--samples", "200", "--adaptive-rounds", "0", "--repeats", "1",
            "--batch", "4", "--fusion-rules", str(rules), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NNMETER_NAS_HOME": str(tmp_path / "h")}
    store = tmp_path / "work" / "measurements.jsonl"
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if store.exists() and store.read_text().count('"type":"kernel"') >= 12:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert not (tmp_path / "pkg").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    kept = {json.loads(ln)["key"] for ln in store.read_text().splitlines()
            if '"type":"kernel"' in ln}
    assert 12 <= len(kept) < 200
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(ln) for ln in store.read_text().splitlines()]
    keys = [r["key"] for r in lines if r.get("type") == "kernel"]
    assert len(keys) == len(set(keys)) == 200 and kept <= set(keys)
    from nnmeter_nas import load_predictor

    assert load_predictor(path=tmp_path / "pkg").name == "tinyrelu"


# ------------------------------------------------------------------------------ calibrate
@pytest.mark.parametrize("args, option", [
    (["--passes", "0"], "--passes"), (["--passes", "-1"], "--passes"),
    (["--pause", "-1"], "--pause"), (["--pause", "nan"], "--pause"),
    (["--space", "spos", "--networks", "0"], "--networks"),
])
def test_calibrate_bad_counts_are_refused_naming_the_option(tmp_path, capsys, args, option):
    """`--passes 0` gave numpy's 'Mean of empty slice' warnings and 'measured latencies must
    be positive'; `--networks 0` 'the breakdowns hold no predicted kernel'; `--pause -1` was
    accepted."""
    models = [] if "--space" in args else ["--models", str(tmp_path / "m.onnx")]
    rc = main(["predictors", "calibrate", X86, *models, "--quiet", *args])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and f"argument {option}:" in line, line


@pytest.fixture
def small_nets(tmp_path):
    import torch

    from nnmeter_nas.graph.torch_export import export_onnx

    paths = []
    for c in (8, 16):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.MaxPool2d(2))
        p = tmp_path / f"conv{c}.onnx"
        p.write_bytes(export_onnx(net, (1, 3, 16, 16)).SerializeToString())
        paths.append(p)
    return paths


def test_calibrate_refuses_too_few_networks_before_measuring(small_nets, monkeypatch):
    """`calibrate --models a.onnx b.onnx` measured both (10 passes, 1 s apart by default),
    then said `2 networks for 3 parameters` (a ValueError)."""
    import nnmeter_nas.builder.network_timing as timing
    from nnmeter_nas import load_predictor
    from nnmeter_nas.builder.calibrate import calibrate_on_device

    monkeypatch.setattr(timing, "measure_interleaved", lambda *a, **k: pytest.fail("measured"))
    models = [p.read_bytes() for p in small_nets]
    with pytest.raises(CalibrationError, match=r"2 networks for 3 parameters \(a scale for "):
        calibrate_on_device(load_predictor(X86), models, space="mine", backend=object(),
                            progress=False)
    with pytest.raises(CalibrationError, match="calibration name 'my space'"):
        calibrate_on_device(load_predictor(X86), models * 2, space="my space",
                            backend=object(), progress=False)


def test_calibrate_checks_the_name_before_measuring(small_nets, tmp_path, capsys, monkeypatch):
    """`--name 'my space'` was refused when the calibration was stored, after measuring."""
    import nnmeter_nas.builder.calibrate as cal

    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cal, "measurement_backend", lambda p: pytest.fail("measuring"))
    rc = main(["predictors", "calibrate", X86, "--models", *map(str, small_nets),
               "--name", "my space", "--quiet"])
    assert rc == 1 and "calibration name 'my space'" in _error_line(capsys.readouterr().err)


def test_calibrate_says_when_it_replaces_a_calibration(small_nets, tmp_path, capsys,
                                                       monkeypatch):
    """Running calibrate again under the same name replaced the stored calibration without
    a word."""
    import nnmeter_nas.builder.calibrate as cal
    from nnmeter_nas.calibration import Calibration
    from nnmeter_nas.packages.registry import builtin_dir

    pkg = tmp_path / "mycpu"
    shutil.copytree(builtin_dir() / X86, pkg)
    fitted = Calibration(scales={"conv-bn-relu": 1.1}, default_scale=1.0, per_kernel_ms=0.001,
                         info={"uncalibrated_rmspe": 0.2, "fit_rmspe": 0.05})
    monkeypatch.setattr(cal, "measurement_backend", lambda p: object())
    monkeypatch.setattr(cal, "calibrate_on_device", lambda *a, **k: (fitted, [0.1, 0.2]))
    argv = ["predictors", "calibrate", str(pkg), "--models", *map(str, small_nets),
            "--name", "mine", "--quiet"]
    assert main(argv) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main(argv) == 0
    assert "replacing the calibration 'mine' stored there before" in capsys.readouterr().out
    assert "mine" in json.loads((pkg / "manifest.json").read_text())["calibrations"]


def test_resume_with_other_fusion_rules_is_refused(tmp_path):
    """A work folder measured with one set of fusion rules, resumed with `--fusion-rules`
    giving another, went on with the stored rules without a word (the given file ignored)."""
    from nnmeter_nas.builder import BuildConfig
    from nnmeter_nas.builder.build import Builder
    from nnmeter_nas.builder.store import MeasurementStore
    from nnmeter_nas.errors import StoreMismatchError
    from nnmeter_nas.kernels import FusionRules
    from nnmeter_nas.packages.registry import builtin_dir

    x86 = builtin_dir() / X86 / "fusion_rules.json"
    a76 = builtin_dir() / "cortexA76cpu_tflite21" / "fusion_rules.json"
    store = MeasurementStore(tmp_path / "measurements.jsonl")
    store.append({"type": "fusion_rules", "rules": FusionRules.from_file(x86).to_dict(),
                  "how": "measured"})
    for given, ok in ((None, True), (x86, True), (a76, False)):
        builder = Builder(BuildConfig(name="x", work_dir=tmp_path, fusion_rules=given),
                          backend=object())
        if ok:
            assert builder.fusion_rules(store).pairs == FusionRules.from_file(x86).pairs
        else:
            with pytest.raises(StoreMismatchError, match="other fusion rules than .*"
                               "leave --fusion-rules out to resume"):
                builder.fusion_rules(store)


def test_build_that_writes_no_package_says_why(tmp_path, capsys, monkeypatch):
    """`--time-budget` spent before any kernel type had 4 measurements ended with `{}` and
    `package: None`, exit 1, and nothing said what to do."""
    import nnmeter_nas.builder.build as build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build, "build_predictor", lambda cfg, **k: build.BuildResult(
        package=None, fits={}, n_measurements=0, n_failures=0, flops_baseline={}, seconds=1.0))
    rc = main(["predictors", "build", "mycpu", "-o", str(tmp_path / "pkg"), "--kernels", "relu",
               "--time-budget", "0.01", "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 1 and "no package written" in line and "--time-budget" in line


def test_fitting_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    """The final fit of a full build takes minutes (19 regressors) and showed nothing between
    the last measuring bar and the summary."""
    from nnmeter_nas.builder import BuildConfig, build
    from nnmeter_nas.builder.build import Builder
    from nnmeter_nas.builder.store import MeasurementStore

    s = MeasurementStore(tmp_path / "m.jsonl", header={"name": "onnxruntime-cpu"})
    for reg in ("conv", "relu"):
        for i in range(5):
            s.append({"key": f"{reg}{i}", "regressor": reg, "features": [float(i), 1.0],
                      "latency_ms": 1.0 + i, "phase": "prior"})
    monkeypatch.setattr(build, "fit_kernel", lambda reg, X, y, **kw: reg)
    for progress in (True, False):
        b = Builder(BuildConfig(name="t", work_dir=tmp_path / "w", progress=progress),
                    backend=object())
        assert b.fit_all(s) == {"conv": "conv", "relu": "relu"}
        err = capsys.readouterr().err
        assert ("fitting: 100%" in err and "2/2" in err and "regressor" in err) == progress, err
