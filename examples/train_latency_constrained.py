#!/usr/bin/env python
"""One-shot SPOS supernet training with a differentiable latency penalty, in a plain loop.

The SPOS space's 20 ``LayerChoice`` blocks become DARTS-style mixed blocks (softmax of an
architecture parameter per label weights the four candidates). Each step trains the weights on a
training batch, then the architecture parameters on a validation batch with
``nnmeter_nas.nni.LatencyPenalty`` (hinge form by default) applied to the loss; the penalty's
``ExpectedLatency`` is computed from the lookup table a ``LatencyProfiler`` built for the
predictor, so the latency term has exact gradients. The derived architecture (argmax per label)
is then looked up against the target, trained on its own from scratch and evaluated.

Accuracy comes from a small-input proxy (``--width-mult`` channels, digits at 32x32); the target
and every latency are those of the same architecture at full width and 1x3x224x224 on a named
device (by default ``cortexA76cpu_tflite21`` when its predictor covers the SPOS kernels at
224x224, else this host's x86 predictor; the output says which).

Outputs in ``--out`` (default ``runs/train_latency_constrained/``)::

    history.csv                step, loss, expected latency (ms), penalty
    training_curves.png        expected latency (with the target) and loss over steps
    result.json                derived architecture, its latency per device, target, accuracy
    latency_table.json         the lookup table (reused by a rerun)

Data: scikit-learn's digits upsampled to 32x32 (ships with scikit-learn, offline).
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
    p.add_argument("--out", type=Path, default=Path("runs/train_latency_constrained"))
    p.add_argument("--steps", type=int, default=30, help="supernet steps (weights + architecture)")
    p.add_argument("--width-mult", type=float, default=0.25,
                   help="channel multiplier of the proxy network (latency is always at 1.0x)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05, help="weight learning rate (SGD)")
    p.add_argument("--arch-lr", type=float, default=0.05, help="architecture learning rate (Adam)")
    p.add_argument("--device", default=None,
                   help="predictor whose latency is penalised (default: cortexA76cpu_tflite21 "
                        "when it covers the SPOS kernels at 224x224, else this host's x86 one)")
    p.add_argument("--predictors", nargs="*", default=None,
                   help="predictor names/paths (default: every installed one; 'dummy' = synthetic)")
    p.add_argument("--target-ms", type=float, default=None,
                   help="latency target in ms (default: --target-quantile of random architectures)")
    p.add_argument("--target-quantile", type=float, default=0.1)
    p.add_argument("--form", default="hinge", choices=["hinge", "add#linear", "mul#log", "fbnet"])
    p.add_argument("--strength", type=float, default=5.0, help="penalty strength / alpha")
    p.add_argument("--retrain-steps", type=int, default=300,
                   help="SGD steps to train the derived architecture from scratch")
    p.add_argument("--retrain-batch-size", type=int, default=64)
    p.add_argument("--eval-samples", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 3 steps of batch 8, 2 retrain steps, 64 test images")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.retrain_steps, args.eval_samples = 3, 8, 2, 64
    return args


def make_supernet(space, labels, **space_kwargs):
    """A DARTS-style supernet of ``space``: every LayerChoice becomes a softmax-weighted mix of
    its candidates.

    The candidates are taken from frozen copies of the space (one per value, e.g. all-``k3``),
    which run as plain PyTorch modules (the unfrozen NNI space evaluates its mutable layers on
    every forward and is far slower). Returns ``(supernet, alphas, names)``: ``alphas`` is a
    ParameterDict ``{label: (n,) logits}`` in the order of ``names[label]``.
    """
    import torch
    from torch import nn
    from nni.nas.nn.pytorch import LayerChoice

    alphas = nn.ParameterDict()
    names: dict[str, list] = {}
    paths: dict[str, str] = {}
    for path, module in space.named_modules():
        if isinstance(module, LayerChoice):
            paths[path] = module.label
            names.setdefault(module.label, list(module.names))
    missing = [l for l in labels if l not in names]
    if missing:
        raise RuntimeError(f"the space has no LayerChoice for labels {missing}")
    values = names[labels[0]]
    if any(names[l] != values for l in names):
        raise RuntimeError("make_supernet expects every LayerChoice to have the same candidates")
    frozen = {v: type(space).frozen_factory({l: v for l in names})(**space_kwargs) for v in values}

    class Mixed(nn.Module):
        def __init__(self, label: str, ops: list) -> None:
            super().__init__()
            self.label = label
            self.ops = nn.ModuleList(ops)

        def forward(self, x):
            w = torch.softmax(alphas[self.label], dim=-1)
            return sum(w[i] * op(x) for i, op in enumerate(self.ops))

    supernet = frozen[values[0]]
    for path, label in paths.items():
        if label not in alphas:
            alphas[label] = nn.Parameter(1e-3 * torch.randn(len(values)))
        parent_path, _, child = path.rpartition(".")
        parent = supernet.get_submodule(parent_path) if parent_path else supernet
        setattr(parent, child, Mixed(label, [frozen[v].get_submodule(path) for v in values]))
    return supernet, alphas, names


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start, c_start = time.perf_counter(), time.process_time()
    _common.setup_runtime(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch

    from nnmeter_nas.nni import ExpectedLatency, LatencyPenalty
    from nnmeter_nas.search_spaces.spos import SPOS_LABELS, SPOSSpace, spos_random_sample

    torch.manual_seed(args.seed)
    predictors, synthetic = _common.installed_predictors(args.predictors, out)
    devices = [p.device for p in predictors]
    device, why = _common.spos_deploy_device(predictors, args.device, out)
    deploy_shape = (1, 3, 224, 224)
    print(f"latency: the full-width network at 1x3x224x224 on {device} ({why})")
    proxy = dict(small_input=True, num_labels=10, width_mult=args.width_mult)
    space = SPOSSpace(**proxy)
    shape = space.input_shape
    profiler = _common.latency_profiler(SPOSSpace(), predictors, deploy_shape, out)
    rng = np.random.default_rng(args.seed)
    random_ms = np.array([profiler.profile(spos_random_sample(rng), device) for _ in range(500)])
    target = args.target_ms or float(np.quantile(random_ms, args.target_quantile))
    print(f"target latency on {device}: {target:.4f} ms (random architectures: median "
          f"{np.median(random_ms):.4f} ms, min {random_ms.min():.4f} ms)")
    fastest = _common.fastest_ms(profiler, device)
    if target < fastest:
        print(f"note: the target is below the fastest SPOS architecture on {device} "
              f"({fastest:.4f} ms): the penalty pushes toward it, but no architecture meets "
              "the target")

    expected = ExpectedLatency(profiler, device)
    strength_kw = ({"strength": args.strength} if args.form in ("hinge", "add#linear")
                   else {"alpha": args.strength})
    penalty = LatencyPenalty(expected, args.form,
                             target_ms=None if args.form == "fbnet" else target, **strength_kw)

    supernet, alphas, names = make_supernet(space, SPOS_LABELS, **proxy)
    supernet = supernet.to(memory_format=torch.channels_last)

    def probs():
        return {l: torch.softmax(alphas[l], -1) for l in SPOS_LABELS}

    # the table's value order must match each label's candidate order
    for l in SPOS_LABELS:
        if list(profiler.table.values_of(l)) != names[l]:
            raise RuntimeError(f"{l}: table values {profiler.table.values_of(l)} != "
                               f"candidates {names[l]}")

    x_tr, y_tr, x_te, y_te = _common.digits_tensors(size=shape[-1], seed=args.seed)
    x_tr, x_te = _common.channels_last(x_tr), _common.channels_last(x_te)
    x_te, y_te = x_te[:args.eval_samples], y_te[:args.eval_samples]
    half = len(y_tr) // 2  # weights train on one half, architecture on the other (DARTS)
    xw, yw, xa, ya = x_tr[:half], y_tr[:half], x_tr[half:], y_tr[half:]

    weights = [p for n, p in supernet.named_parameters()]
    w_opt = torch.optim.SGD(weights, lr=args.lr, momentum=0.9, weight_decay=4e-5)
    a_opt = torch.optim.Adam(alphas.parameters(), lr=args.arch_lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(args.seed)
    history = []
    init_ms = float(expected(probs()).detach())
    t_train = time.perf_counter()
    from tqdm import tqdm

    for step in tqdm(range(args.steps), desc="supernet", file=sys.stdout):
        supernet.train()
        idx = torch.randint(0, len(yw), (args.batch_size,), generator=g)
        loss_w = torch.nn.functional.cross_entropy(supernet(xw[idx]), yw[idx])
        w_opt.zero_grad()
        loss_w.backward()
        w_opt.step()

        idx = torch.randint(0, len(ya), (args.batch_size,), generator=g)
        loss_a = torch.nn.functional.cross_entropy(supernet(xa[idx]), ya[idx])
        total, details = penalty(loss_a, probs())
        a_opt.zero_grad()
        w_opt.zero_grad()
        total.backward()
        a_opt.step()
        history.append({"step": step + 1, "train_loss": float(loss_w.detach()),
                        "val_loss": float(loss_a.detach()), "total_loss": float(total.detach()),
                        "expected_latency_ms": float(details["expected_latency_ms"]),
                        "penalty": float(details["penalty"])})
    train_s = time.perf_counter() - t_train
    final_ms = float(expected(probs()).detach())

    derived = {l: names[l][int(alphas[l].detach().argmax())] for l in SPOS_LABELS}
    lat = profiler.profile_all(derived)
    from nnmeter_nas.graph.torch_export import export_onnx

    deploy = export_onnx(SPOSSpace.frozen_factory(derived)(), deploy_shape)
    full_ms = {p.device: float(p.predict(deploy)) for p in predictors}
    torch.manual_seed(args.seed)
    net = SPOSSpace.frozen_factory(derived)(**proxy).to(memory_format=torch.channels_last)
    t_re = time.perf_counter()
    _common.train_steps(net, x_tr, y_tr, args.retrain_steps, args.retrain_batch_size, args.lr,
                        args.seed)
    acc = _common.accuracy(net, x_te, y_te)
    retrain_s = time.perf_counter() - t_re

    import pandas as pd
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    result = {
        "device": device, "device_reason": why, "devices": devices,
        "synthetic_predictor": synthetic, "deploy_input_shape": list(deploy_shape),
        "proxy": {"width_mult": args.width_mult, "image_size": shape[-1]},
        "form": args.form, "target_ms": target, "expected_latency_ms_start": init_ms,
        "expected_latency_ms_end": final_ms, "derived_arch": derived,
        "derived_arch_code": _common.fmt_arch(derived, SPOS_LABELS),
        "derived_latency_ms": lat, "derived_full_prediction_ms": full_ms,
        "meets_target": bool(lat[device] <= target * (1 + 1e-9)),
        "retrain_steps": args.retrain_steps, "accuracy": acc,
        "random_arch_median_ms": float(np.median(random_ms)),
        "supernet_seconds": train_s, "retrain_seconds": retrain_s,
        "total_seconds": time.perf_counter() - t_start, "steps": args.steps,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    _plot(history, target, device, out / "training_curves.png", synthetic)

    print()
    if synthetic:
        print(_common.BANNER + "\n!! latencies below come from the SYNTHETIC dummy predictor, "
              "not a real device\n" + _common.BANNER)
    print(f"supernet: {args.steps} steps in {train_s:.0f} s; expected latency on {device} "
          f"{init_ms:.4f} -> {final_ms:.4f} ms (target {target:.4f} ms, {args.form} penalty)")
    print(f"derived architecture: {result['derived_arch_code']}  "
          f"(layer_1..layer_20, 3/5/7 = kernel, x = xception)")
    for d in devices:
        print(f"  latency on {d}: {lat[d]:.4f} ms (table), {full_ms[d]:.4f} ms (full prediction)"
              + (f"   target {target:.4f} ms: {'met' if result['meets_target'] else 'MISSED'}"
                 if d == device else ""))
    print(f"derived architecture trained alone for {args.retrain_steps} steps: {acc:.1%} on "
          f"{len(y_te)} held-out digits (proxy {args.width_mult:g}x channels at "
          f"{shape[-1]}x{shape[-1]}; latencies at 1x3x224x224, full width)")
    print(f"time: {result['total_seconds']:.0f} s in all ({time.process_time() - c_start:.0f} s CPU)")
    print(f"outputs: {out / 'result.json'}, {out / 'history.csv'}, {out / 'training_curves.png'}")
    return result


def _plot(history, target, device, path, synthetic) -> None:
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(steps, [h["expected_latency_ms"] for h in history], label="expected latency")
    a1.axhline(target, color="crimson", ls="--", label=f"target {target:.3f} ms")
    a1.set_xlabel("step")
    a1.set_ylabel(f"ms on {device}" + (" [SYNTHETIC]" if synthetic else ""))
    a1.legend(fontsize=8)
    a2.plot(steps, [h["train_loss"] for h in history], label="weights: train CE")
    a2.plot(steps, [h["total_loss"] for h in history], label="architecture: val CE + penalty")
    a2.set_xlabel("step")
    a2.set_ylabel("loss")
    a2.legend(fontsize=8)
    fig.suptitle("SPOS supernet with a latency penalty")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
