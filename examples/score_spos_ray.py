#!/usr/bin/env python
"""Score N random SPOS candidates on every installed device with Ray.

Uses ``nnmeter_nas.parallel.score`` (table mode: a latency lookup table per device, candidates
scored in chunks by Ray workers; ``--mode full`` predicts each exported network kernel by
kernel). Prints latency percentiles per device and the rank correlation between devices, and
writes to ``--out`` (default ``runs/score_spos_ray/``)::

    scores.parquet            one row per candidate: labels, FLOPs, params, <device>_ms
    summary.csv               percentiles per device
    latency_distributions.png histogram of latency per device
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/score_spos_ray"))
    p.add_argument("-n", "--num", type=int, default=100_000, help="random candidates")
    p.add_argument("--space", default="spos-small", choices=["spos", "spos-small"],
                   help="spos = 224x224 ImageNet space, spos-small = its 32x32 variant")
    p.add_argument("--predictors", nargs="*", default=None,
                   help="predictor names/paths (default: every installed one; 'dummy' = synthetic)")
    p.add_argument("--mode", choices=["table", "full"], default="table")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--workers", type=int, default=None, help="local Ray workers (default: cores)")
    p.add_argument("--in-process", action="store_true", help="no Ray (for comparison)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="smoke test: 200 candidates, 2 workers")
    args = p.parse_args(argv)
    if args.tiny:
        args.num, args.workers = 200, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    _common.setup_runtime(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    from nnmeter_nas.parallel import score

    predictors, synthetic = _common.installed_predictors(args.predictors, out)
    # package paths travel to Ray workers better than predictor objects
    devices = [str(p.package.path) if getattr(getattr(p, "package", None), "path", None) else p
               for p in predictors]
    t0 = time.perf_counter()
    df = score(args.space, n=args.num, devices=devices, mode=args.mode, address=args.address,
               num_workers=args.workers, seed=args.seed, out=out / "scores.parquet",
               in_process=True if args.in_process else (False if args.tiny else None),
               overwrite=True)
    score_s = time.perf_counter() - t0
    cols = [c for c in df.columns if c.endswith("_ms")]
    qs = [0.01, 0.10, 0.50, 0.90, 0.99]
    summary = pd.DataFrame({c[:-3]: [df[c].min(), *df[c].quantile(qs), df[c].max()] for c in cols},
                           index=["min", *[f"p{int(q * 100)}" for q in qs], "max"]).T
    summary.to_csv(out / "summary.csv")
    corr = df[cols].corr(method="spearman") if len(cols) > 1 else None
    _plot(df, cols, out / "latency_distributions.png", synthetic)
    info = df.attrs.get("nnmeter_nas", {})
    result = {"rows": int(len(df)), "devices": [c[:-3] for c in cols], "synthetic": synthetic,
              "score_seconds": score_s, "candidates_per_second": len(df) / max(score_s, 1e-9),
              "backend": info.get("backend"), "total_seconds": time.perf_counter() - t_start,
              "percentiles_ms": summary.to_dict(orient="index"),
              "spearman": None if corr is None else corr.to_dict()}
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))

    if synthetic:
        print(_common.BANNER + "\n!! latencies below come from the SYNTHETIC dummy predictor, "
              "not a real device\n" + _common.BANNER)
    print(f"scored {len(df)} {args.space} candidates on {len(cols)} device(s) in {score_s:.1f} s "
          f"({result['candidates_per_second']:.0f}/s, backend {result['backend']})")
    print("latency percentiles (ms):")
    print(summary.round(4).to_string())
    if corr is not None:
        print("Spearman rank correlation between devices:")
        print(corr.round(3).to_string())
    print(f"outputs: {out / 'scores.parquet'}, {out / 'summary.csv'}, "
          f"{out / 'latency_distributions.png'}")
    return result


def _plot(df, cols, path, synthetic) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cols):
        ax.hist(df[c], bins=50, color="steelblue")
        ax.set_title(c[:-3] + (" [SYNTHETIC]" if synthetic else ""), fontsize=9)
        ax.set_xlabel("predicted latency (ms)")
    axes[0][0].set_ylabel("candidates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
