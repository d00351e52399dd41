#!/usr/bin/env python
"""Hardware-aware multi-trial NAS on the SPOS (ShuffleNetV2) space with NNI 3.

A ``NasExperiment`` (sequential engine) searches the SPOS space with a latency-aware strategy
(``nnmeter_nas.strategies.ConstrainedEvolution``) chained with ``nnmeter_nas.nni.LatencyFilter``,
so that no architecture over the latency budget is ever trained. Each trial trains its network
briefly on scikit-learn's digits (8x8 images upsampled to 32x32; ships with scikit-learn, works
offline) and reports test accuracy. At the end it prints the top architectures with accuracy and
predicted latency on every installed predictor, and writes::

    <out>/trials.csv, trials.json      every trained architecture: sample, accuracy, latency (ms)
    <out>/accuracy_vs_latency.png      accuracy against latency, budget drawn in
    <out>/latency_table.json           the lookup table the search used (reused by a rerun)
    <out>/nni/                         NNI's experiment directory

Run ``python examples/multi_trial_spos.py --help`` for the knobs; the defaults take a few
minutes on a 2-core CPU. ``--tiny`` is the smoke-test setting.
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
    p.add_argument("--out", type=Path, default=Path("runs/multi_trial_spos"), help="output folder")
    p.add_argument("--trials", type=int, default=10, help="architectures to train")
    p.add_argument("--train-steps", type=int, default=25, help="SGD steps per trial")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--eval-samples", type=int, default=360,
                   help="held-out digits to measure accuracy on (at most 360)")
    p.add_argument("--device", default=None,
                   help="predictor whose latency is budgeted (default: the built-in one for this "
                        "host's CPU, x86<isa>cpu_onnxruntime, else the first installed)")
    p.add_argument("--predictors", nargs="*", default=None,
                   help="predictor names/paths to report (default: every installed one; "
                        "'dummy' = the synthetic test predictor)")
    p.add_argument("--budget-ms", type=float, default=None,
                   help="latency budget in ms (default: the --budget-quantile of random SPOS "
                        "architectures on --device)")
    p.add_argument("--budget-quantile", type=float, default=0.3)
    p.add_argument("--strategy", choices=["evolution", "random"], default="evolution")
    p.add_argument("--population", type=int, default=6, help="evolution population size")
    p.add_argument("--full-size", action="store_true",
                   help="the 224x224 ImageNet space instead of the 32x32 small-input variant")
    p.add_argument("--top", type=int, default=5, help="architectures in the final table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 2 trials, 1 step of batch 8, 64 test images, top 2")
    args = p.parse_args(argv)
    if args.tiny:
        args.trials, args.train_steps, args.batch_size = 2, 1, 8
        args.eval_samples, args.top, args.population = 64, 2, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    _common.setup_runtime(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy.middleware import Chain

    from nnmeter_nas.nni import LatencyFilter
    from nnmeter_nas.search_spaces.spos import SPOS_LABELS, SPOSSpace, spos_random_sample

    # ---- predictors, space, latency table
    predictors, synthetic = _common.installed_predictors(args.predictors, out)
    devices = [p.device for p in predictors]
    device = args.device or _common.default_device(devices)
    if device not in devices:
        sys.exit(f"--device {device!r} is not among the predictors {devices}")
    space = SPOSSpace(small_input=not args.full_size, num_labels=10)
    shape = space.input_shape
    profiler = _common.latency_profiler(space, predictors, shape, out)

    rng = np.random.default_rng(args.seed)
    random_ms = np.array([profiler.profile(spos_random_sample(rng), device) for _ in range(500)])
    budget = args.budget_ms or float(np.quantile(random_ms, args.budget_quantile))
    print(f"search space: SPOS {'224x224' if args.full_size else '32x32 (small-input)'}, "
          f"4^20 architectures; random ones on {device}: median {np.median(random_ms):.3f} ms, "
          f"min..max {random_ms.min():.3f}..{random_ms.max():.3f} ms")
    print(f"latency budget on {device}: {budget:.3f} ms "
          f"({(random_ms <= budget).mean():.0%} of random architectures meet it)")

    # ---- data and the trial
    size = shape[-1]
    x_tr, y_tr, x_te, y_te = _common.digits_tensors(size=size, seed=args.seed)
    x_te, y_te = x_te[:args.eval_samples], y_te[:args.eval_samples]
    step_seed = iter(range(10**6))

    def evaluate(model: torch.nn.Module) -> None:
        torch.manual_seed(args.seed)
        _common.train_steps(model, x_tr, y_tr, args.train_steps, args.batch_size, args.lr,
                            seed=args.seed + next(step_seed))
        nni.report_final_result(_common.accuracy(model, x_te, y_te))

    # ---- strategy: latency-aware search + LatencyFilter as a guard on what gets trained
    budgets = {device: budget}
    try:
        from nnmeter_nas.strategies import ConstrainedEvolution, ConstrainedRandom
        if args.strategy == "evolution":
            strategy = ConstrainedEvolution(profiler, budgets, population_size=args.population,
                                            sample_size=max(1, args.population // 3),
                                            seed=args.seed, devices=devices, log_every=1)
        else:
            strategy = ConstrainedRandom(profiler, budgets, seed=args.seed, devices=devices,
                                         log_every=1)
    except ImportError as exc:  # pragma: no cover - the strategies package is part of nnmeter_nas
        from nni.nas.strategy import RegularizedEvolution
        print(f"nnmeter_nas.strategies unavailable ({exc}); using NNI's RegularizedEvolution")
        strategy = RegularizedEvolution(population_size=args.population,
                                        sample_size=max(1, args.population // 3), seed=args.seed)
    lat_filter = LatencyFilter(budgets, profiler, log_every=0)

    config = NasExperimentConfig("sequential", "raw")
    config.max_trial_number = args.trials
    config.experiment_working_directory = str((out / "nni").resolve())
    exp = NasExperiment(space, FunctionalEvaluator(evaluate), Chain(strategy, lat_filter), config)
    t_search = time.perf_counter()
    exp.run()
    search_s = time.perf_counter() - t_search

    # ---- results
    rows = []
    for model in strategy.list_models(sort=False):
        sample = {k: v for k, v in model.sample.items() if k in SPOS_LABELS}
        metric = model.metric
        if isinstance(metric, dict):
            metric = metric.get("default")
        lat = profiler.profile_all(sample)
        rows.append({"arch": _common.fmt_arch(sample, SPOS_LABELS),
                     "accuracy": None if metric is None else float(metric),
                     **{f"{d}_ms": float(lat[d]) for d in devices},
                     "within_budget": bool(lat[device] <= budget * (1 + 1e-9)),
                     "sample": sample})
    trained = [r for r in rows if r["accuracy"] is not None]
    trained.sort(key=lambda r: -r["accuracy"])
    top = trained[:args.top]
    # Cross-check the table with a full (graph-level) prediction of the top networks.
    for r in top:
        net = SPOSSpace.frozen_factory(r["sample"])(small_input=not args.full_size, num_labels=10)
        r["full_prediction_ms"] = {p.device: float(p.predict(net, input_shape=shape))
                                   for p in predictors}

    import pandas as pd
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("sample", "full_prediction_ms")}
                          for r in trained])
    table.to_csv(out / "trials.csv", index=False)
    summary = {
        "device": device, "budget_ms": budget, "devices": devices,
        "synthetic_predictor": synthetic, "input_shape": list(shape),
        "trials_requested": args.trials, "trials_trained": len(trained),
        "filter": {"checked": lat_filter.n_checked, "rejected": lat_filter.n_rejected},
        "search_seconds": search_s, "total_seconds": time.perf_counter() - t_start,
        "trials": rows, "top": top,
    }
    (out / "trials.json").write_text(json.dumps(summary, indent=1))
    _plot(trained, device, budget, random_ms, out / "accuracy_vs_latency.png", synthetic)

    # ---- the printout
    print()
    if synthetic:
        print(_common.BANNER + "\n!! latencies below come from the SYNTHETIC dummy predictor, "
              "not a real device\n" + _common.BANNER)
    print(f"trained {len(trained)} architectures in {search_s:.0f} s; all within "
          f"{budget:.3f} ms on {device}: {all(r['within_budget'] for r in trained)} "
          f"(LatencyFilter checked {lat_filter.n_checked}, rejected {lat_filter.n_rejected})")
    print(f"top {len(top)} by accuracy (arch: layer_1..layer_20, 3/5/7 = kernel, x = xception):")
    head = f"  {'arch':20s}  {'acc':>6s}" + "".join(f"  {d[:24]:>24s}" for d in devices)
    print(head + "   (ms: table / full prediction)")
    for r in top:
        cells = "".join(f"  {r[d + '_ms']:>11.3f} / {r['full_prediction_ms'][d]:<10.3f}"
                        for d in devices)
        print(f"  {r['arch']:20s}  {r['accuracy']:6.1%}{cells}")
    print(f"outputs: {out / 'trials.csv'}, {out / 'trials.json'}, "
          f"{out / 'accuracy_vs_latency.png'}  ({time.perf_counter() - t_start:.0f} s in all)")
    return summary


def _plot(trained, device, budget, random_ms, path, synthetic) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r[f"{device}_ms"] for r in trained]
    ys = [100 * r["accuracy"] for r in trained]
    ax.scatter(xs, ys, c=range(len(xs)), cmap="viridis", label="trained architectures (color: order)")
    ax.axvline(budget, color="crimson", ls="--", label=f"budget {budget:.3f} ms")
    ax.axvspan(float(min(random_ms.min(), budget)), float(random_ms.max()), color="grey", alpha=0.08,
               label="range of random architectures")
    ax.set_xlabel(f"predicted latency on {device} (ms)" + (" [SYNTHETIC]" if synthetic else ""))
    ax.set_ylabel("digits test accuracy (%)")
    ax.set_title("SPOS multi-trial search under a latency budget")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
