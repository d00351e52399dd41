"""Accuracy measures of latency predictions, as nn-Meter reports them."""
from __future__ import annotations

import numpy as np


def accuracy_report(pred_ms, true_ms) -> dict[str, float]:
    """Share of networks within +-10 % and +-5 % of the measured latency, RMSPE (root mean
    squared relative error), mean absolute relative error, and Kendall's tau-b between predicted
    and measured latencies. Shares and errors are fractions (0.95 = 95 %)."""
    from scipy.stats import kendalltau

    p = np.asarray(pred_ms, dtype=float)
    y = np.asarray(true_ms, dtype=float)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equally long, non-empty predictions and measurements, got "
                         f"{p.shape} and {y.shape}")
    rel = p / y - 1.0
    tau = kendalltau(p, y).statistic if p.size > 1 else float("nan")
    return {"n": int(p.size),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "mape": float(np.mean(np.abs(rel))),
            "kendall_tau": float(tau)}
