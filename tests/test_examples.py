"""The examples run end to end with their smallest arguments and write sane outputs.

Each example runs as a subprocess (``sys.executable examples/x.py --tiny``) with the synthetic
predictor (``--predictors dummy``) so the run does not depend on which predictors are installed.
Each test has its own output folder, so each runs alone and in any order.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(script: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _cli_predict_ms(onnx_path: Path, package: Path) -> float:
    proc = subprocess.run([sys.executable, "-m", "nnmeter_nas.cli", "predict", str(onnx_path),
                           "--device", str(package), "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["predictions"][0]["latency_ms"]


@pytest.mark.slow
def test_multi_trial_spos_searches_within_budget_and_exports_the_chosen(tmp_path):
    stdout = _run("multi_trial_spos.py", "--out", str(tmp_path), "--predictors", "dummy")
    result = json.loads((tmp_path / "result.json").read_text())
    budget = result["budget_ms"]
    assert math.isfinite(budget) and budget > 0
    assert result["deploy_input_shape"] == [1, 3, 224, 224]
    cands = pd.read_csv(tmp_path / "candidates.csv")
    assert len(cands) == result["candidates_scored"] >= 1
    assert cands["within_budget"].all() and (cands["dummy_ms"] <= budget * (1 + 1e-9)).all()
    assert cands["supernet_accuracy"].between(0, 1).all()
    top = pd.read_csv(tmp_path / "top_architectures.csv")
    assert 1 <= len(top) <= 3 and top["supernet_accuracy"].is_monotonic_decreasing
    chosen = result["chosen"]
    assert chosen["arch"] == top["arch"][0] and len(chosen["sample"]) == 20
    assert 0.0 <= chosen["test_accuracy"] <= 1.0
    # the table's latency is the full prediction of the exported 224x224 network, by the CLI too
    table_ms = chosen["latency_ms"]["dummy"]
    assert table_ms == pytest.approx(float(top["dummy_ms"][0]))
    assert chosen["onnx_full_prediction_ms"]["dummy"] == pytest.approx(table_ms, rel=1e-3)
    cli_ms = _cli_predict_ms(tmp_path / "chosen_224.onnx", tmp_path / "dummy_predictor" / "dummy")
    assert cli_ms == pytest.approx(table_ms, rel=1e-3)
    assert (tmp_path / "accuracy_vs_latency.png").stat().st_size > 5000
    assert "SYNTHETIC" in stdout and "0.25x channels" in stdout and "1x3x224x224" in stdout


@pytest.mark.slow
def test_multi_trial_spos_with_nni_regularized_evolution(tmp_path):
    """``--strategy nni-evolution``: NNI's RegularizedEvolution chained with LatencyFilter scores
    candidates with inherited weights; only architectures within the budget are scored."""
    _run("multi_trial_spos.py", "--out", str(tmp_path), "--predictors", "dummy",
         "--strategy", "nni-evolution")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["strategy"] == "nni-evolution"
    budget = result["budget_ms"]
    cands = pd.read_csv(tmp_path / "candidates.csv")
    assert len(cands) == result["candidates_scored"] >= 1
    assert (cands["dummy_ms"] <= budget * (1 + 1e-9)).all() and cands["within_budget"].all()
    assert result["filter"]["checked"] >= len(cands)
    chosen = result["chosen"]
    assert chosen["latency_ms"]["dummy"] <= budget * (1 + 1e-9)
    assert chosen["onnx_full_prediction_ms"]["dummy"] == pytest.approx(
        chosen["latency_ms"]["dummy"], rel=1e-3)


@pytest.mark.slow
def test_train_latency_constrained_reports_derived_arch(tmp_path):
    stdout = _run("train_latency_constrained.py", "--out", str(tmp_path),
                  "--predictors", "dummy")
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["derived_arch"]) == 20
    lat = result["derived_latency_ms"]["dummy"]
    assert math.isfinite(lat) and lat > 0
    assert result["derived_full_prediction_ms"]["dummy"] == pytest.approx(lat, rel=1e-3)
    assert result["meets_target"] == (lat <= result["target_ms"] * (1 + 1e-9))
    assert 0.0 <= result["accuracy"] <= 1.0
    hist = pd.read_csv(tmp_path / "history.csv")
    assert len(hist) == 3 and hist.notna().all().all()
    assert (hist["expected_latency_ms"] > 0).all()
    assert f"latency on dummy: {lat:.4f} ms" in stdout
    assert (tmp_path / "training_curves.png").stat().st_size > 5000


def test_score_spos_rows_and_percentiles(tmp_path):
    stdout = _run("score_spos_ray.py", "--out", str(tmp_path), "--predictors", "dummy",
                  "--in-process")
    df = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(df) == 200
    assert df["dummy_ms"].notna().all() and (df["dummy_ms"] > 0).all()
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    row = summary.loc["dummy"]
    assert row["min"] <= row["p50"] <= row["max"]
    assert row["p50"] == pytest.approx(df["dummy_ms"].median())
    assert (tmp_path / "latency_distributions.png").stat().st_size > 5000
    assert "scored 200" in stdout


@pytest.mark.slow
def test_multi_trial_spos_refuses_a_budget_no_architecture_meets_before_training(tmp_path):
    """A budget under the space's fastest architecture used to be found out only after the
    supernet was trained (minutes with the defaults), as an InfeasibleBudgetError traceback from
    inside NNI's experiment; it now stops first, naming the fastest latency. An unknown
    --device gets the closest name."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    cmd = [sys.executable, str(EXAMPLES / "multi_trial_spos.py"), "--tiny", "--out",
           str(tmp_path), "--predictors", "dummy"]
    proc = subprocess.run(cmd + ["--budget-ms", "0.001"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "below the fastest SPOS architecture on dummy" in proc.stderr
    assert "Raise --budget-ms" in proc.stderr and "Traceback" not in proc.stderr
    assert "supernet:" not in proc.stdout and not (tmp_path / "nni").exists()
    proc = subprocess.run(cmd + ["--device", "dumy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "did you mean 'dummy'?" in proc.stderr, proc.stderr[-3000:]
