#!/usr/bin/env python
"""How much class signal survives the randomly initialised SPOS proxy network, layer by layer.

For a uniform architecture of ``SPOSSpace(small_input=True, width_mult=0.25)`` (train-mode
batch norms, 256 digits upsampled to 32x32) prints the between-class share of the variance of
the spatially pooled features after layers 4, 8, 16 and 20 (1.0: features are the class; about
(10 - 1) / (256 - 1) = 0.035 for features unrelated to the class), under several
initialisations of the convolutions::

    nni          NNI's (pointwise N(0, 1/fan_in), depthwise N(0, 1))
    dw_dirac     depthwise kernels = identity + N(0, 0.1)
    kaiming_pw   pointwise convs Kaiming-normal
    torch        torch's default (reset_parameters)
    pw_ortho     pointwise convs orthogonal

    taskset -c 0 python benchmarks/spos_init_signal.py [--values k3,xcep]

Used in ``docs/spos_supernet.md`` (why the SPOS supernet did not learn from random weights).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--values", default="k3,xcep")
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import _common
    from nnmeter_nas.search_spaces.spos import SPOS_LABELS, SPOSSpace

    torch.set_num_threads(1)
    x, y, _, _ = _common.digits_tensors(32)
    x, y = x[:256], y[:256]

    def between_share(h: torch.Tensor) -> float:
        pooled = h.mean((2, 3))
        pooled = pooled - pooled.mean(0)
        means = torch.stack([pooled[y == c].mean(0) for c in range(10)])
        counts = torch.stack([(y == c).sum() for c in range(10)]).float()
        between = (counts[:, None] * means.pow(2)).sum() / len(y)
        return float(between / pooled.pow(2).mean(0).sum())

    print("init        value  after layer 4 / 8 / 16 / 20")
    for mode in ("nni", "dw_dirac", "kaiming_pw", "torch", "pw_ortho"):
        for value in args.values.split(","):
            torch.manual_seed(0)
            net = SPOSSpace.frozen_factory({label: value for label in SPOS_LABELS})(
                small_input=True, num_labels=10, width_mult=0.25)
            for name, m in net.named_modules():
                if not isinstance(m, torch.nn.Conv2d) or "first" in name:
                    continue
                if mode == "dw_dirac" and m.groups > 1:
                    torch.nn.init.dirac_(m.weight, groups=m.groups)
                    m.weight.data += 0.1 * torch.randn_like(m.weight)
                elif mode == "kaiming_pw" and m.groups == 1:
                    torch.nn.init.kaiming_normal_(m.weight)
                elif mode == "torch":
                    m.reset_parameters()
                elif mode == "pw_ortho" and m.groups == 1:
                    torch.nn.init.orthogonal_(m.weight)
            net.train()
            shares = []
            with torch.no_grad():
                h = net.first_conv(x)
                for i, block in enumerate(net.features):
                    h = block(h)
                    if i + 1 in (4, 8, 16, 20):
                        shares.append(between_share(h))
            print(f"{mode:11s} {value:5s}  " + " / ".join(f"{s:.3f}" for s in shares), flush=True)


if __name__ == "__main__":
    main()
