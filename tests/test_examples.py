"""The examples run end to end with their smallest arguments and write sane outputs.

Each example runs as a subprocess (``sys.executable examples/x.py --tiny``) with the synthetic
predictor (``--predictors dummy``) so the run does not depend on which predictors are installed.
The multi-trial and training examples share one output folder so the second reuses the latency
table the first built.
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


def _run(script: str, *args: str, timeout: int = 400) -> str:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


def test_multi_trial_spos_trains_only_within_budget(shared_out):
    stdout = _run("multi_trial_spos.py", "--out", str(shared_out), "--predictors", "dummy")
    summary = json.loads((shared_out / "trials.json").read_text())
    budget = summary["budget_ms"]
    assert math.isfinite(budget) and budget > 0
    trained = [t for t in summary["trials"] if t["accuracy"] is not None]
    assert len(trained) == summary["trials_requested"] == 2
    for t in trained:
        assert 0.0 <= t["accuracy"] <= 1.0
        assert math.isfinite(t["dummy_ms"]) and t["dummy_ms"] <= budget * (1 + 1e-9)
    for t in summary["top"]:  # the full prediction of the network agrees with the table
        assert t["full_prediction_ms"]["dummy"] == pytest.approx(t["dummy_ms"], rel=1e-3)
    csv = pd.read_csv(shared_out / "trials.csv")
    assert len(csv) == 2 and csv["within_budget"].all()
    assert (shared_out / "accuracy_vs_latency.png").stat().st_size > 5000
    assert "SYNTHETIC" in stdout and "top 2 by accuracy" in stdout


def test_train_latency_constrained_reports_derived_arch(shared_out):
    stdout = _run("train_latency_constrained.py", "--out", str(shared_out),
                  "--predictors", "dummy")
    assert "reusing" in stdout  # the latency table of the first example
    result = json.loads((shared_out / "result.json").read_text())
    assert len(result["derived_arch"]) == 20
    lat = result["derived_latency_ms"]["dummy"]
    assert math.isfinite(lat) and lat > 0
    assert result["derived_full_prediction_ms"]["dummy"] == pytest.approx(lat, rel=1e-3)
    assert result["meets_target"] == (lat <= result["target_ms"] * (1 + 1e-9))
    assert 0.0 <= result["accuracy"] <= 1.0
    hist = pd.read_csv(shared_out / "history.csv")
    assert len(hist) == 3 and hist.notna().all().all()
    assert (hist["expected_latency_ms"] > 0).all()
    assert f"latency on dummy: {lat:.4f} ms" in stdout
    assert (shared_out / "training_curves.png").stat().st_size > 5000


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
