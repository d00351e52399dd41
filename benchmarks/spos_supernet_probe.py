#!/usr/bin/env python
"""Why the SPOS proxy supernet does not learn: training-loss probes of path sampling variants.

A plain training loop (no NNI strategy) over the proxy space of ``examples/multi_trial_spos.py``
(``SPOSSpace(small_input=True, width_mult=0.25)``, digits upsampled to 32x32, batch 64, SGD
momentum 0.9, weight decay 4e-5): every step takes the subnet that the step's path picks
(:func:`nnmeter_nas.nni.supernet.shared_subnet`, the supernet's own weights), one
forward/backward pass, one optimizer step. Prints the training loss averaged over the last
``--every`` steps (chance: ln 10 = 2.303).

Path variants (default: one uniformly random choice per layer per step, as SPOS trains)::

    --values k3                   one fixed architecture (all-k3); k7, xcep likewise
    --fixed-random                one random mixed architecture, fixed for the whole run
    --same                        one random value per step, the same in every layer (4 paths)
    --only 10                     only layer_10 sampled, the other layers k3 (--only 1,5,9,17 ...)
    --fix-stride2                 layers 1, 5, 9, 17 (the stride-2 blocks) fixed at k3
    --values k3,k5,k7             no xception block
    --fair                        FairNAS strict fairness: per step 4 paths that use every
                                  choice of every layer once, gradients summed, one step

Initialisation / optimizer variants::

    --same-init      k5/k7 start as copies of k3 (kernel zero-padded: the same function)
    --entangle       k3/k5 use the centre of k7's depthwise kernels, other layers shared
    --kaiming-init   pointwise convs Kaiming-normal instead of NNI's N(0, 1/fan_in)
    --zero-gamma     last batch norm of each stride-1 block's branch starts at gamma = 0
    --freeze-choices only the stem, last conv and classifier train
    --adam, --lr, --no-momentum
    --warmup 50      the all-k3 path alone for 50 steps, then align_candidates (every candidate
                     starts as k3's function: the library's remedy, see docs/spos_supernet.md);
                     --steps counts the uniform SPOS steps after it

    python benchmarks/spos_supernet_probe.py --steps 100 [variants]

Runs on one torch thread; pin it (``taskset -c 0``). Results: ``benchmarks/results/
spos_supernet_probe.txt`` (written by hand from this script's printouts) and
``docs/spos_supernet.md``.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--image-size", type=int, default=32, help="digits upsampled to this size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--values", default="k3,k5,k7,xcep")
    p.add_argument("--same", action="store_true")
    p.add_argument("--fixed-random", action="store_true")
    p.add_argument("--only", default=None)
    p.add_argument("--fix-stride2", action="store_true")
    p.add_argument("--fair", action="store_true")
    p.add_argument("--same-init", action="store_true")
    p.add_argument("--entangle", action="store_true")
    p.add_argument("--kaiming-init", action="store_true")
    p.add_argument("--zero-gamma", action="store_true")
    p.add_argument("--freeze-choices", action="store_true")
    p.add_argument("--score", type=int, default=0,
                   help="after training: inherited accuracy of this many random paths on the "
                        "held-out digits (batch norms recalibrated on 2 training batches of 128)")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--tau", type=int, default=0,
                   help="after training: this many random paths scored with inherited weights "
                        "and trained alone (--standalone-steps, fresh weights) on the same data; "
                        "prints both accuracies and their Kendall tau")
    p.add_argument("--standalone-steps", type=int, default=150)
    p.add_argument("--adam", action="store_true")
    p.add_argument("--no-momentum", action="store_true")
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch.nn.functional as F
    from nni.nas.nn.pytorch import LayerChoice

    import _common
    from nnmeter_nas.nni.supernet import inherited_accuracy, shared_subnet
    from nnmeter_nas.search_spaces.spos import SPOS_LABELS, SPOSSpace, align_candidates

    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = _common.digits_tensors(args.image_size)
    vals = args.values.split(",")
    torch.manual_seed(0)
    space = SPOSSpace(small_input=True, num_labels=10, width_mult=args.width_mult)
    rng = random.Random(0)
    choices = [m for m in space.modules() if isinstance(m, LayerChoice)]
    if args.zero_gamma:
        for m in choices:
            for name in m.names:
                blk = m[name]
                if blk.stride == 1:
                    bns = [b for b in blk.branch_main if isinstance(b, torch.nn.BatchNorm2d)]
                    torch.nn.init.zeros_(bns[-1].weight)
    if args.kaiming_init:
        for n, m in space.named_modules():
            if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and "first" not in n:
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    if args.same_init:
        with torch.no_grad():
            for m in choices:
                for name in ("k5", "k7"):
                    for p1, p2 in zip(m["k3"].parameters(), m[name].parameters()):
                        pad = (p2.shape[-1] - p1.shape[-1]) // 2
                        p2.copy_(p1 if p1.shape == p2.shape else F.pad(p1, (pad,) * 4))
    if args.entangle:
        class CentreCrop(torch.nn.Module):
            def __init__(self, big: torch.nn.Conv2d, k: int):
                super().__init__()
                self.big, self.k = big, k

            def forward(self, x):
                w = self.big.weight
                o = (w.shape[-1] - self.k) // 2
                return F.conv2d(x, w[:, :, o:o + self.k, o:o + self.k], None, self.big.stride,
                                self.k // 2, 1, self.big.groups)

        for m in choices:
            big = m["k7"]
            for name, k in (("k3", 3), ("k5", 5)):
                for br in ("branch_main", "branch_proj"):
                    src, dst = getattr(big, br), getattr(m[name], br)
                    for i in range(len(dst)):
                        mod = src[i]
                        is_dw7 = isinstance(mod, torch.nn.Conv2d) and mod.kernel_size[0] == 7
                        dst[i] = CentreCrop(mod, k) if is_dw7 else mod

    fixed = {label: rng.choice(vals) for label in SPOS_LABELS} if args.fixed_random else None
    only = [int(v) for v in args.only.split(",")] if args.only else None

    def path() -> dict:
        if fixed is not None:
            return fixed
        if args.same:
            v = rng.choice(vals)
            return {label: v for label in SPOS_LABELS}
        a = {label: rng.choice(vals) for label in SPOS_LABELS}
        if args.fix_stride2:
            for i in (1, 5, 9, 17):
                a[f"layer_{i}"] = "k3"
        if only:
            for i in range(1, 21):
                if i not in only:
                    a[f"layer_{i}"] = "k3"
        return a

    params = list(space.parameters())
    if args.freeze_choices:
        params = [p for n, p in space.named_parameters() if not n.startswith("features")]
    opt = (torch.optim.Adam(params, lr=args.lr) if args.adam else
           torch.optim.SGD(params, lr=args.lr, momentum=0.0 if args.no_momentum else 0.9,
                           weight_decay=4e-5))
    g = torch.Generator().manual_seed(0)
    if args.warmup:
        wopt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=4e-5)
        k3 = shared_subnet(space, {label: "k3" for label in SPOS_LABELS}).train()
        for _ in range(args.warmup):
            idx = torch.randint(0, len(y_tr), (args.batch_size,), generator=g)
            wopt.zero_grad()
            F.cross_entropy(k3(x_tr[idx]), y_tr[idx]).backward()
            wopt.step()
        align_candidates(space, "k3")
    tag = " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    t0, losses = time.time(), []
    for s in range(args.steps):
        idx = torch.randint(0, len(y_tr), (args.batch_size,), generator=g)
        opt.zero_grad()
        if args.fair:
            perms = {label: rng.sample(vals, len(vals)) for label in SPOS_LABELS}
            total = 0.0
            for j in range(len(vals)):
                net = shared_subnet(space, {label: perms[label][j] for label in SPOS_LABELS})
                net.train()
                loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
                loss.backward()
                total += loss.item()
            losses.append(total / len(vals))
        else:
            net = shared_subnet(space, path())
            net.train()
            loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            losses.append(loss.item())
        opt.step()
        if (s + 1) % args.every == 0:
            print(f"[{tag}] step {s + 1}: loss (mean of last {args.every}) "
                  f"{sum(losses[-args.every:]) / args.every:.3f}, {time.time() - t0:.0f} s",
                  flush=True)

    if args.score:
        import statistics

        calib = [x_tr[torch.randint(0, len(y_tr), (128,), generator=g)] for _ in range(2)]
        score_rng = random.Random(1)
        accs = sorted(inherited_accuracy(shared_subnet(space, {label: score_rng.choice(vals)
                                                               for label in SPOS_LABELS}),
                                         calib, x_te, y_te) for _ in range(args.score))
        print(f"[{tag}] inherited accuracy of {args.score} random paths on {len(y_te)} held-out "
              f"digits: min {accs[0]:.1%}, median {statistics.median(accs):.1%}, "
              f"max {accs[-1]:.1%}", flush=True)

    if args.tau:
        from scipy.stats import kendalltau

        calib = [x_tr[torch.randint(0, len(y_tr), (128,), generator=g)] for _ in range(2)]
        tau_rng = random.Random(2)
        inherited, alone = [], []
        for i in range(args.tau):
            sample = {label: tau_rng.choice(vals) for label in SPOS_LABELS}
            inherited.append(inherited_accuracy(shared_subnet(space, sample), calib, x_te, y_te))
            torch.manual_seed(i)
            net = SPOSSpace.frozen_factory(sample)(small_input=True, num_labels=10,
                                                   width_mult=args.width_mult)
            _common.train_steps(net, x_tr, y_tr, args.standalone_steps, args.batch_size,
                                args.lr, seed=i)
            alone.append(_common.accuracy(net, x_te, y_te))
            print(f"[{tag}] path {i}: {_common.fmt_arch(sample, SPOS_LABELS)} inherited "
                  f"{inherited[-1]:.1%}, alone ({args.standalone_steps} steps) {alone[-1]:.1%}",
                  flush=True)
        tau, p_value = kendalltau(inherited, alone)
        print(f"[{tag}] Kendall tau (inherited vs alone, {args.tau} paths): {tau:.2f} "
              f"(p = {p_value:.2f})", flush=True)


if __name__ == "__main__":
    main()
