"""Parameter and multiply-accumulate (MAC) counts of a model, for sanity-checking definitions.

Run ``python -m nnmeter_nas.zoo.stats`` to print the table for every zoo model at 224x224.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (weights + biases, BN affine included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one forward pass.

    This is the convention of the published "FLOPs" of MobileNet/ShuffleNet/MnasNet (which are
    MACs): BN, activations, pooling, add and mul are not counted. ``input_shape`` is NCHW; the
    input is zeros on the model's device.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    return run_counting_macs(model, torch.zeros(*input_shape, device=device))[0]


def run_counting_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Run ``model.eval()`` on ``x`` without autograd; return (Conv2d + Linear MACs, output)."""
    total = 0

    def on_conv(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * (m.in_channels // m.groups) * k

    def on_linear(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(on_linear))
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total, out


# Published figures (parameters in millions, MACs in millions at 224x224) from the papers /
# reference implementations, used only for the printed comparison.
PUBLISHED = {
    "resnet18": (11.69, 1814),
    "resnet34": (21.80, 3664),
    "resnet50": (25.56, 4089),
    "mobilenet_v1": (4.2, 569),
    "mobilenet_v2": (3.5, 300),
    "mobilenet_v3_large": (5.4, 219),
    "mobilenet_v3_small": (2.5, 56),
    "shufflenet_v2": (2.3, 146),
    "mnasnet_a1": (3.9, 312),
    "squeezenet1_1": (1.24, 349),
    "vgg11_bn": (132.87, 7609),
    "googlenet_like": (6.8, 1500),
    "densenet_like": (7.98, 2866),
    "proxyless_mobile": (4.1, 320),
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    from . import ZOO

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224, help="input height = width (pixels)")
    args = parser.parse_args(argv)
    print(f"{'model':20s} {'params(M)':>10s} {'pub':>8s} {'MMACs':>9s} {'pub':>8s}")
    for name, factory in ZOO.items():
        torch.manual_seed(0)
        model = factory()
        params = count_params(model) / 1e6
        macs = count_macs(model, (1, 3, args.size, args.size)) / 1e6
        pub_p, pub_m = PUBLISHED.get(name, (float("nan"), float("nan")))
        print(f"{name:20s} {params:10.3f} {pub_p:8.2f} {macs:9.1f} {pub_m:8.0f}")


if __name__ == "__main__":
    main()
