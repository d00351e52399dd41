"""Where the time of the torch-front-end equivalence sweeps goes (tests/test_torch_frontend.py).

For a few candidates of each swept space (same sampler and seed as the tests), prints the CPU
seconds per candidate (process time, so a shared core does not inflate them) of each step the
sweep takes: building the frozen network, the torch front end, the ONNX export, reading the
ONNX graph, and detecting kernels and extracting features for both graphs; and the estimated
CPU time of the 200-candidate sweeps.

    python benchmarks/sweep_cost.py --n 5
"""
from __future__ import annotations

import argparse
import time
import warnings


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="candidates timed per space (default 5)")
    ap.add_argument("--spaces", nargs="+", default=["spos-small", "spos", "nb201"])
    ap.add_argument("--sweep", type=int, default=200, help="candidates per sweep (default 200)")
    args = ap.parse_args(argv)

    import torch

    from nnmeter_nas.features.extract import FEATURE_SETS, extract_features
    from nnmeter_nas.graph import load_graph
    from nnmeter_nas.graph.onnx_import import onnx_to_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.kernels.detector import detect_kernels
    from nnmeter_nas.kernels.fusion_rules import FusionRules
    from nnmeter_nas.search_spaces.sampling import random_networks

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # as the tests (one_torch_thread)
    rules = FusionRules.default()

    def kernels(graph):
        return [(k.type, [extract_features(k, fs) for fs in FEATURE_SETS])
                for k in detect_kernels(graph, rules)]

    steps = ["build", "torch front end", "ONNX export", "ONNX read", "kernels (both)"]
    print(f"CPU s per candidate, {args.n} candidates per space after one warm-up "
          f"(torch {torch.__version__})")
    print(f"{'space':12s}" + "".join(f"{s:>17s}" for s in steps) + f"{'total':>9s}"
          + f"{'sweep of ' + str(args.sweep):>14s}")
    grand = 0.0
    for space in args.spaces:
        nets = list(random_networks(space, args.n + 1, seed=2024))
        cost = dict.fromkeys(steps, 0.0)
        for i, (_, make, shape) in enumerate(nets):
            t = [time.process_time()]
            net = make()
            t.append(time.process_time())
            traced = load_graph(net, input_shape=shape, torch_frontend="trace")
            t.append(time.process_time())
            proto = export_onnx(net, shape)
            t.append(time.process_time())
            exported = onnx_to_graph(proto)
            t.append(time.process_time())
            same = kernels(traced) == kernels(exported)
            t.append(time.process_time())
            assert same, f"{space}: kernel lists differ"
            if i:  # the first candidate pays the imports
                for step, a, b in zip(steps, t, t[1:]):
                    cost[step] += (b - a) / args.n
        total = sum(cost.values())
        grand += total * args.sweep
        print(f"{space:12s}" + "".join(f"{cost[s]:17.3f}" for s in steps) + f"{total:9.3f}"
              + f"{total * args.sweep:13.0f}s")
    print(f"all sweeps: about {grand:.0f} CPU s on one core")


if __name__ == "__main__":
    main()
