#!/usr/bin/env python
"""Hardware-aware SPOS: train a supernet once, search it under a latency budget, retrain the best.

The method of Single Path One-Shot (Guo et al.) and of NNI's hardware-aware SPOS example, on the
SPOS (ShuffleNetV2) space with NNI 3:

1. **Supernet**: the all-k3 path is trained alone for ``--warmup-steps`` and every other
   candidate then starts as a copy of it (``align_candidates``: a ShuffleNetV2 block passes its
   output on by concatenation, so candidates with independent random weights hand the next
   layer differently rotated features, and uniform sampling from such a start stays at chance
   here, see ``docs/spos_supernet.md``); then NNI's ``RandomOneShot`` strategy in a
   ``NasExperiment`` trains the supernet, one uniformly sampled path per step, on a small-input
   proxy: scikit-learn's digits (8x8, upsampled to ``--image-size``) and the space's channels
   scaled by ``--width-mult``.
2. **Search**: a second ``NasExperiment`` (sequential engine) over the trained supernet
   (``nnmeter_nas.nni.SharedWeightsSpace``) with ``ConstrainedEvolution`` chained with
   ``LatencyFilter`` (``--strategy nni-evolution``: NNI's ``RegularizedEvolution`` with the
   filter). Each candidate inherits the supernet's weights, its batch norms are recalibrated on
   training batches, and its validation accuracy is its score: no candidate is trained.
3. **Retrain**: the best architecture within the budget is trained on its own from scratch and
   evaluated on held-out digits.

Latency is that of the same architecture as deployed: the full-width network at 1x3x224x224 on a
named device (``--device``; by default ``cortexA76cpu_tflite21`` when its predictor covers every
SPOS kernel at 224x224 within its calibrated range, else this host's built-in x86 predictor; the
output says which and why). Outputs in ``--out``::

    candidates.csv             every candidate: architecture, supernet accuracy, ms per device
    top_architectures.csv      the best candidates within the budget, ms on every device
    accuracy_vs_latency.png    candidates, budget line, Pareto front, the chosen one
    chosen_224.onnx            the chosen architecture at 1x3x224x224 (`nnmeter-nas predict` it)
    result.json                budget, device, chosen architecture, accuracy, times
    latency_table.json         the lookup table (reused by a rerun)

``--tiny`` is the smoke-test setting.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DEPLOY_SHAPE = (1, 3, 224, 224)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/multi_trial_spos"), help="output folder")
    p.add_argument("--width-mult", type=float, default=0.25,
                   help="channel multiplier of the proxy network (latency is always at 1.0x)")
    p.add_argument("--image-size", type=int, default=32, help="proxy input size (digits upsampled)")
    p.add_argument("--supernet-epochs", type=int, default=12,
                   help="epochs of supernet training (uniform single-path sampling)")
    p.add_argument("--warmup-steps", type=int, default=60,
                   help="SGD steps training the all-k3 path alone before the supernet, whose "
                        "other candidates then start as copies of k3 (align_candidates); 0 = "
                        "plain random initialisation (the supernet then stays at chance here)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (supernet, retrain)")
    p.add_argument("--trials", type=int, default=200, help="candidates the search scores")
    p.add_argument("--calibration-batches", type=int, default=2,
                   help="training batches of 128 to recalibrate each candidate's batch norms on")
    p.add_argument("--retrain-steps", type=int, default=300,
                   help="SGD steps to train the chosen architecture from scratch")
    p.add_argument("--device", default=None,
                   help="predictor whose latency is budgeted (default: cortexA76cpu_tflite21 when "
                        "it covers the SPOS kernels at 224x224, else this host's x86 predictor)")
    p.add_argument("--predictors", nargs="*", default=None,
                   help="predictor names/paths to report (default: every installed one; "
                        "'dummy' = the synthetic test predictor)")
    p.add_argument("--budget-ms", type=float, default=None,
                   help="latency budget in ms (default: the --budget-quantile of random SPOS "
                        "architectures on --device)")
    p.add_argument("--budget-quantile", type=float, default=0.3)
    p.add_argument("--strategy", choices=["evolution", "nni-evolution"], default="evolution",
                   help="evolution = nnmeter_nas ConstrainedEvolution; nni-evolution = NNI's "
                        "RegularizedEvolution; both chained with LatencyFilter")
    p.add_argument("--population", type=int, default=20, help="evolution population size")
    p.add_argument("--top", type=int, default=5, help="architectures in the final table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 1 supernet epoch on 128 images, 6 candidates, 2 retrain "
                        "steps, 64 test images")
    args = p.parse_args(argv)
    args.train_limit = None
    if args.tiny:
        args.supernet_epochs, args.trials, args.retrain_steps = 1, 6, 2
        args.warmup_steps = 2
        args.population, args.top, args.calibration_batches = 3, 3, 1
        args.train_limit = 128
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start, c_start = time.perf_counter(), time.process_time()
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
    from nnmeter_nas.nni.supernet import SharedWeightsSpace, inherited_accuracy, train_supernet
    from nnmeter_nas.nni.supernet import shared_subnet
    from nnmeter_nas.search_spaces.spos import (SPOS_LABELS, SPOSSpace, align_candidates,
                                                spos_random_sample)

    # ---- predictors, deployment device, latency table at 1x3x224x224
    predictors, synthetic = _common.installed_predictors(args.predictors, out)
    devices = [p.device for p in predictors]
    device, why = _common.spos_deploy_device(predictors, args.device, out)
    print(f"latency: the full-width network at {'x'.join(map(str, DEPLOY_SHAPE))} on {device} ({why})")
    profiler = _common.latency_profiler(SPOSSpace(), predictors, DEPLOY_SHAPE, out)
    rng = np.random.default_rng(args.seed)
    random_ms = np.array([profiler.profile(spos_random_sample(rng), device) for _ in range(500)])
    budget = args.budget_ms or float(np.quantile(random_ms, args.budget_quantile))
    print(f"random architectures on {device}: median {np.median(random_ms):.3f} ms, "
          f"{random_ms.min():.3f}..{random_ms.max():.3f} ms; budget {budget:.3f} ms "
          f"({(random_ms <= budget).mean():.0%} of them meet it)")
    fastest = _common.fastest_ms(profiler, device)
    if budget < fastest:  # before training anything: no candidate could be scored
        sys.exit(f"--budget-ms {budget:g} is below the fastest SPOS architecture on {device} "
                 f"({fastest:.3f} ms at {'x'.join(map(str, DEPLOY_SHAPE))}): no candidate can "
                 "meet it. Raise --budget-ms, or leave it out for the --budget-quantile of "
                 "random architectures")

    # ---- data: train (supernet, calibration), validation (search score), test (final)
    x_tr, y_tr, x_te, y_te = _common.digits_tensors(size=args.image_size, seed=args.seed)
    x_tr, x_te = _common.channels_last(x_tr), _common.channels_last(x_te)
    n_fit = len(y_tr) * 4 // 5
    x_fit, y_fit, x_val, y_val = x_tr[:n_fit], y_tr[:n_fit], x_tr[n_fit:], y_tr[n_fit:]
    if args.train_limit:
        x_fit, y_fit = x_fit[:args.train_limit], y_fit[:args.train_limit]
        x_val, y_val, x_te, y_te = x_val[:64], y_val[:64], x_te[:64], y_te[:64]
    proxy = dict(small_input=True, num_labels=10, width_mult=args.width_mult)
    print(f"accuracy: proxy network, {args.width_mult:g}x channels, digits at "
          f"{args.image_size}x{args.image_size} ({len(y_fit)} train / {len(y_val)} validation / "
          f"{len(y_te)} held-out test images)")

    # ---- 1. supernet, trained once with NNI's RandomOneShot
    torch.manual_seed(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    space = SPOSSpace(**proxy).to(memory_format=torch.channels_last)
    if args.warmup_steps:
        # the all-k3 path first, then every candidate starts as its copy: aligned outputs
        _common.train_steps(shared_subnet(space, {label: "k3" for label in SPOS_LABELS}),
                            x_fit, y_fit, args.warmup_steps, args.batch_size, args.lr,
                            seed=args.seed)
        align_candidates(space, "k3")
    supernet = train_supernet(
        space,
        _common.lightning_classification(x_fit, y_fit, x_val, y_val, args.supernet_epochs,
                                         args.batch_size, args.lr, args.seed),
        working_directory=out / "nni")
    supernet_s = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"supernet: {args.warmup_steps} warm-up steps of the all-k3 path, candidates aligned "
          f"to it, then {args.supernet_epochs} epochs in {supernet_s[0]:.0f} s "
          f"({supernet_s[1]:.0f} s CPU)")

    # ---- 2. search over the trained supernet, inherited weights, within the budget
    g = torch.Generator().manual_seed(args.seed)
    calibration = [x_fit[torch.randint(0, len(y_fit), (128,), generator=g)]
                   for _ in range(args.calibration_batches)]

    def evaluate(model: torch.nn.Module) -> None:
        nni.report_final_result(inherited_accuracy(model, calibration, x_val, y_val))

    budgets = {device: budget}
    if args.strategy == "evolution":
        from nnmeter_nas.strategies import ConstrainedEvolution
        strategy = ConstrainedEvolution(profiler, budgets, population_size=args.population,
                                        sample_size=max(1, args.population // 4),
                                        seed=args.seed, devices=devices, log_every=0)
    else:
        from nni.nas.strategy import RegularizedEvolution
        strategy = RegularizedEvolution(population_size=args.population,
                                        sample_size=max(1, args.population // 4), seed=args.seed)
    lat_filter = LatencyFilter(budgets, profiler, log_every=0)
    config = NasExperimentConfig("sequential", "raw")
    config.max_trial_number = args.trials
    config.experiment_working_directory = str((out / "nni").resolve())
    t0, c0 = time.perf_counter(), time.process_time()
    NasExperiment(SharedWeightsSpace(supernet), FunctionalEvaluator(evaluate),
                  Chain(strategy, lat_filter), config).run()
    search_s = (time.perf_counter() - t0, time.process_time() - c0)

    rows, seen = [], set()
    for model in strategy.list_models(sort=False):
        sample = {k: v for k, v in model.sample.items() if k in SPOS_LABELS}
        metric = model.metric.get("default") if isinstance(model.metric, dict) else model.metric
        arch = _common.fmt_arch(sample, SPOS_LABELS)
        if metric is None or arch in seen:
            continue
        seen.add(arch)
        lat = profiler.profile_all(sample)
        rows.append({"arch": arch, "supernet_accuracy": float(metric),
                     **{f"{d}_ms": float(lat[d]) for d in devices},
                     "within_budget": bool(lat[device] <= budget * (1 + 1e-9)), "sample": sample})
    feasible = sorted((r for r in rows if r["within_budget"]),
                      key=lambda r: (-r["supernet_accuracy"], r[f"{device}_ms"]))
    if not feasible:
        sys.exit(f"no candidate within {budget:.3f} ms on {device} was scored; raise --trials "
                 "or --budget-ms")
    print(f"search: {len(rows)} candidates scored with inherited weights in {search_s[0]:.0f} s "
          f"({search_s[1]:.0f} s CPU); LatencyFilter checked {lat_filter.n_checked}, "
          f"rejected {lat_filter.n_rejected}; {len(feasible)} within the budget")

    # ---- 3. the best architecture within the budget, trained on its own
    chosen = feasible[0]
    torch.manual_seed(args.seed)
    net = SPOSSpace.frozen_factory(chosen["sample"])(**proxy).to(memory_format=torch.channels_last)
    t0, c0 = time.perf_counter(), time.process_time()
    _common.train_steps(net, x_tr if not args.train_limit else x_fit,
                        y_tr if not args.train_limit else y_fit,
                        args.retrain_steps, args.batch_size, args.lr, seed=args.seed)
    test_acc = _common.accuracy(net, x_te, y_te)
    retrain_s = (time.perf_counter() - t0, time.process_time() - c0)

    # ---- the deployment network: ONNX at 224x224, full prediction on every device
    from nnmeter_nas.graph.torch_export import export_onnx

    deploy = SPOSSpace.frozen_factory(chosen["sample"])()
    onnx_path = out / "chosen_224.onnx"
    tmp = onnx_path.with_suffix(".onnx.part")
    tmp.write_bytes(export_onnx(deploy, DEPLOY_SHAPE).SerializeToString())
    tmp.replace(onnx_path)
    full_ms = {p.device: float(p.predict(str(onnx_path))) for p in predictors}

    top = feasible[:args.top]
    import pandas as pd
    cols = ["arch", "supernet_accuracy"] + [f"{d}_ms" for d in devices] + ["within_budget"]
    pd.DataFrame([{k: r[k] for k in cols} for r in rows]).to_csv(out / "candidates.csv",
                                                                  index=False)
    pd.DataFrame([{k: r[k] for k in cols if k != "within_budget"} for r in top]).to_csv(
        out / "top_architectures.csv", index=False)
    total_s = (time.perf_counter() - t_start, time.process_time() - c_start)
    result = {
        "device": device, "device_reason": why, "budget_ms": budget, "devices": devices,
        "synthetic_predictor": synthetic, "deploy_input_shape": list(DEPLOY_SHAPE),
        "proxy": {"width_mult": args.width_mult, "image_size": args.image_size},
        "supernet": {"warmup_steps": args.warmup_steps, "epochs": args.supernet_epochs},
        "strategy": args.strategy, "candidates_scored": len(rows),
        "filter": {"checked": lat_filter.n_checked, "rejected": lat_filter.n_rejected},
        "chosen": {"arch": chosen["arch"], "sample": chosen["sample"],
                   "supernet_accuracy": chosen["supernet_accuracy"],
                   "latency_ms": {d: chosen[f"{d}_ms"] for d in devices},
                   "onnx": str(onnx_path), "onnx_full_prediction_ms": full_ms,
                   "retrain_steps": args.retrain_steps, "test_accuracy": test_acc,
                   "test_images": len(y_te)},
        "seconds": {"supernet": supernet_s[0], "search": search_s[0], "retrain": retrain_s[0],
                    "total": total_s[0]},
        "cpu_seconds": {"supernet": supernet_s[1], "search": search_s[1],
                        "retrain": retrain_s[1], "total": total_s[1]},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    _plot(rows, chosen, device, budget, out / "accuracy_vs_latency.png", synthetic)

    # ---- the printout
    print()
    if synthetic:
        print(_common.BANNER + "\n!! latencies below come from the SYNTHETIC dummy predictor, "
              "not a real device\n" + _common.BANNER)
    print(f"top {len(top)} within {budget:.3f} ms on {device} (supernet accuracy on "
          f"{len(y_val)} validation digits; ms at {'x'.join(map(str, DEPLOY_SHAPE))}; "
          "arch: layer_1..layer_20, 3/5/7 = kernel, x = xception):")
    print(f"  {'arch':20s}  {'acc':>6s}" + "".join(f"  {d[:24]:>24s}" for d in devices))
    for r in top:
        print(f"  {r['arch']:20s}  {r['supernet_accuracy']:6.1%}"
              + "".join(f"  {r[d + '_ms']:>24.3f}" for d in devices))
    print(f"chosen {chosen['arch']}: {chosen[f'{device}_ms']:.3f} ms on {device} (budget "
          f"{budget:.3f} ms); {onnx_path} predicts "
          + ", ".join(f"{d} {full_ms[d]:.3f}" for d in devices) + " ms")
    print(f"chosen architecture trained alone for {args.retrain_steps} steps: "
          f"{test_acc:.1%} on {len(y_te)} held-out digits "
          f"(proxy {args.width_mult:g}x channels at {args.image_size}x{args.image_size})")
    print(f"time: supernet {supernet_s[0]:.0f} s, search {search_s[0]:.0f} s, retrain "
          f"{retrain_s[0]:.0f} s, {total_s[0]:.0f} s in all ({total_s[1]:.0f} s CPU, "
          f"{torch.get_num_threads()} torch thread)")
    print(f"outputs: {out}/ candidates.csv, top_architectures.csv, accuracy_vs_latency.png, "
          "chosen_224.onnx, result.json")
    return result


def _plot(rows, chosen, device, budget, path, synthetic) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r[f"{device}_ms"] for r in rows]
    ys = [100 * r["supernet_accuracy"] for r in rows]
    ax.scatter(xs, ys, s=14, alpha=0.6, label="candidates (inherited weights)")
    front, best = [], -1.0
    for x, y in sorted(zip(xs, ys), key=lambda t: (t[0], -t[1])):
        if y > best:
            front.append((x, y))
            best = y
    ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="black", lw=1,
            label="Pareto front")
    ax.axvline(budget, color="crimson", ls="--", label=f"budget {budget:.3f} ms")
    ax.scatter([chosen[f"{device}_ms"]], [100 * chosen["supernet_accuracy"]], marker="*", s=160,
               color="gold", edgecolor="black", zorder=3, label="chosen")
    ax.set_xlabel(f"predicted latency at 224x224 on {device} (ms)"
                  + (" [SYNTHETIC]" if synthetic else ""))
    ax.set_ylabel("validation accuracy, supernet weights (%)")
    ax.set_title("SPOS search under a latency budget")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
