"""The ``nnmeter-nas`` command line: help, exit codes, one-line errors, every command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from nnmeter_nas.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m nnmeter_nas.cli ARGS`` in a fresh interpreter."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nnmeter_nas.cli", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A dummy predictor package directory (device ``dev_cli``) and its predictor."""
    from nnmeter_nas.testing import make_dummy_predictor

    d = tmp_path_factory.mktemp("pkg")
    pred = make_dummy_predictor("dev_cli", directory=d)
    return d / "dev_cli", pred


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import torch

    from nnmeter_nas.graph.torch_export import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10))
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    path.write_bytes(export_onnx(net, (1, 3, 32, 32)).SerializeToString())
    return path


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("nnmeter-nas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------- help, exit codes
def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from nnmeter_nas.cli import main; rc = main(['--help']);"
            "heavy = [m for m in ('torch', 'numpy', 'ray', 'nni', 'pandas', 'onnx') "
            "if m in sys.modules]; print('HEAVY', heavy, rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY [] 0" in out.stdout
    for command in ("predictors", "predict", "lut", "score"):
        assert command in out.stdout


@pytest.mark.parametrize("argv", [
    ["predictors", "--help"], ["predictors", "list", "--help"], ["predictors", "import", "--help"],
    ["predictors", "install", "--help"], ["predict", "--help"], ["lut", "--help"],
    ["score", "--help"]])
def test_every_command_has_help_with_examples(argv, capsys):
    assert main(argv) == 0
    assert "examples:" in capsys.readouterr().out


def test_console_script_is_declared():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "nnmeter-nas = nnmeter_nas.cli:main" in cfg


@pytest.mark.parametrize("argv, message", [
    ([], "required"),
    (["frobnicate"], "invalid choice"),
    (["score", "--space", "toy", "--n", "10"], "--out"),
    (["score", "--space", "toy", "--n", "-3", "--out", "x.csv"], "at least 1"),
    (["score", "--space", "toy", "--n", "ten", "--out", "x.csv"], "number of candidates"),
    (["predict", "m.onnx", "-d", "x", "--input-shape", "1,3,224"], "4 positive ints"),
    (["score", "--space", "toy", "--out", "x.csv"], "either --n"),
    (["score", "--space", "toy", "--n", "5", "--kernels", "--out", "x.csv"], "--mode full"),
    (["score", "--space", "no_such_space", "--n", "5", "--out", "x.csv", "-d", "x"],
     "unknown search space"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert message in line


def test_runtime_errors_exit_1_without_traceback_unless_debug(tmp_path, capsys):
    missing = str(tmp_path / "nope.onnx")
    assert main(["predict", missing, "-d", "whatever"]) == 1
    assert missing in _error_line(capsys.readouterr().err)
    assert main(["predict", str(tmp_path), "-d", "x"]) == 2  # a directory is not a model
    capsys.readouterr()
    with pytest.raises(FileNotFoundError):
        main(["predict", missing, "-d", "whatever", "--debug"])
    # Same through the console entry point in a fresh process.
    proc = run_cli("--debug", "predict", missing, "-d", "whatever")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    proc = run_cli("predictors", "install", str(tmp_path / "absent.zip"))
    assert proc.returncode == 1
    assert "absent.zip" in _error_line(proc.stderr)


# ---------------------------------------------------------------------------- predictors
def test_predictors_install_and_list(package, nnmeter_home, capsys):
    pkg_dir, _ = package
    assert main(["predictors", "install", str(pkg_dir)]) == 0
    assert "installed" in capsys.readouterr().out
    assert main(["predictors", "list"]) == 0
    out = capsys.readouterr().out
    row = [ln for ln in out.splitlines() if ln.startswith("dev_cli")]
    assert row and "installed" in row[0] and "in use" in row[0]
    assert main(["predictors", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "dev_cli", "source": "installed"}.items() <= \
        [r for r in rows if r["name"] == "dev_cli"][0].items()


def test_predictors_import_nnmeter_release(tmp_path, nnmeter_home, capsys):
    legacy = pytest.importorskip("legacy_release")
    zip_path = legacy.make_zip(tmp_path / "mydev.zip", legacy.release_files(), top="mydev")
    out_dir = tmp_path / "converted"
    assert main(["predictors", "import", str(zip_path), "--out", str(out_dir), "--quiet"]) == 0
    from nnmeter_nas.packages.format import PredictorPackage

    assert PredictorPackage.load(out_dir).name == "mydev"
    assert main(["predictors", "import", str(zip_path), "--quiet"]) == 0
    assert "installed" in capsys.readouterr().out
    assert (nnmeter_home / "predictors" / "mydev").is_dir()


def test_predictors_build_hook_or_clear_error(capsys):
    try:
        from nnmeter_nas.builder import cli as builder_cli  # noqa: F401
        available = hasattr(builder_cli, "add_build_parser") and hasattr(builder_cli, "run_build")
    except ImportError:
        available = False
    if available:
        assert main(["predictors", "build", "--help"]) == 0
        assert "usage:" in capsys.readouterr().out
    else:
        assert main(["predictors", "build", "--device", "x"]) == 1
        assert "not available" in _error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- predict
def test_predict_onnx_text_json_and_kernels(package, onnx_model, capsys):
    pkg_dir, pred = package
    want = pred.predict(str(onnx_model))
    assert main(["predict", str(onnx_model), "--device", str(pkg_dir)]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] == "dev_cli" and float(out.split()[1]) == pytest.approx(want, abs=1e-4)
    assert main(["predict", str(onnx_model), "-d", str(pkg_dir), "--kernels", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["predictions"]
    assert entry["device"] == "dev_cli" and entry["latency_ms"] == pytest.approx(want)
    assert sum(k["latency_ms"] for k in entry["kernels"]) == pytest.approx(want)
    assert main(["predict", str(onnx_model), "-d", str(pkg_dir), "--kernels"]) == 0
    assert "total" in capsys.readouterr().out


def test_predict_unknown_device_is_one_line_error(onnx_model, nnmeter_home, capsys):
    assert main(["predict", str(onnx_model), "-d", "no_such_device"]) == 1
    assert "no_such_device" in _error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- lut, score
def test_lut_refuses_an_unpriced_choice_unless_allow_missing(package, tmp_path, capsys):
    """A space holding a kernel the device cannot price: `lut` names it and writes nothing;
    with --allow-missing it writes the table, counting it as 0 ms with a warning."""
    pkg_dir, _ = package
    out = tmp_path / "act.json"
    argv = ["lut", "--space", "test_nni_table:_ActSpace", "--input-shape", "1,3,16,16",
            "--device", str(pkg_dir), "--out", str(out), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "'elu' (Elu)" in err and "--allow-missing" in err and not out.exists()
    assert main(argv + ["--allow-missing"]) == 0
    assert "Counted as 0 ms" in capsys.readouterr().err and out.exists()


def test_lut_then_score_with_the_table_and_resume(package, tmp_path, capsys):
    pkg_dir, pred = package
    table_path = tmp_path / "toy.json"
    assert main(["lut", "--space", "toy", "--device", str(pkg_dir), "--out", str(table_path),
                 "--quiet"]) == 0
    assert "choice points" in capsys.readouterr().out
    from nnmeter_nas.nni.table import LatencyTable

    table = LatencyTable.load(table_path)
    assert table.devices == ["dev_cli"] and len(table.points) > 0

    out = tmp_path / "scores.csv"
    argv = ["score", "--space", "toy", "-d", str(pkg_dir), "--n", "all", "--out", str(out),
            "--table", str(table_path), "--quiet", "--in-process"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "54 candidates" in summary and "dev_cli" in summary
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 54 and df["index"].tolist() == list(range(54))
    sample = {"op1": df["op1"][7], "op2": df["op2"][7], "depth": int(df["depth"][7]),
              "head": df["head"][7]}
    assert df["dev_cli_ms"][7] == pytest.approx(table.latency(sample, "dev_cli"), rel=1e-9)
    # The same command again finds the finished job; a different one is refused (exit 1).
    assert main(argv) == 0
    assert "54 candidates" in capsys.readouterr().out
    assert main([*argv[:-2], "--mode", "full", "--quiet"]) == 1
    assert "another job" in _error_line(capsys.readouterr().err)


def test_score_samples_file_full_mode_with_kernels(package, tmp_path, capsys):
    pkg_dir, _ = package
    samples = tmp_path / "archs.json"
    samples.write_text(json.dumps([{"op1": "conv3", "op2": "sep3", "depth": 2, "head": "skip"},
                                   {"op1": "conv5", "op2": "conv5", "depth": 3, "head": "conv1"}]))
    out = tmp_path / "full.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["score", "--space", "toy", "-d", str(pkg_dir), "--samples", str(samples),
                   "--mode", "full", "--kernels", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    import pandas as pd

    df = pd.read_parquet(out)
    assert df["op2"].tolist() == ["sep3", "conv5"] and df["depth"].tolist() == [2, 3]
    kernels = json.loads(df["dev_cli_kernels"][1])
    assert sum(k[2] for k in kernels) == pytest.approx(df["dev_cli_ms"][1], rel=1e-6)
    assert df["dev_cli_ms"][1] > df["dev_cli_ms"][0]  # bigger convs, deeper
