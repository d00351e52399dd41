"""Latency lookup table vs full prediction on random SPOS architectures.

For each random architecture of the SPOS ShuffleNetV2 space, compares the table sum
(``LatencyProfiler.profile``) with the full prediction of the frozen network NNI builds
(``space.freeze(sample)`` -> ONNX -> kernels -> regressors, as ``LatencyPredictor.predict``).
Prints the median / 95th percentile / largest relative difference per device (targets: median
under 1 %, largest under 3 %) and, for the worst architecture, where the difference sits.

    python benchmarks/lut_accuracy.py                       # installed predictors, 200 samples
    python benchmarks/lut_accuracy.py --predictors cortexA76cpu_tflite21 --samples 300
    python benchmarks/lut_accuracy.py --small               # 32x32 variant

Without installed predictors it falls back to the synthetic test predictor and says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_predictors(names: list[str], paths: list[str]):
    import nnmeter_nas

    if names or paths:
        return ([nnmeter_nas.load_predictor(n) for n in names]
                + [nnmeter_nas.load_predictor(path=p) for p in paths]), False
    rows = [r for r in nnmeter_nas.list_predictors() if r.status == "in use"]
    if rows:
        return [nnmeter_nas.load_predictor(r.name) for r in rows], False
    from nnmeter_nas.testing import make_dummy_predictor

    print("!! no predictor installed: using the synthetic test predictor "
          "(nnmeter_nas.testing.make_dummy_predictor); its numbers are not a real device's")
    return [make_dummy_predictor()], True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--predictors", nargs="*", default=[], help="predictor names (default: "
                    "every installed predictor)")
    ap.add_argument("--paths", nargs="*", default=[], help="predictor package directories")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="the 32x32 small-input SPOS space")
    ap.add_argument("--fast-freeze", action="store_true",
                    help="build the full-prediction networks with SpaceFreezer instead of NNI's "
                         "freeze (faster; the default is NNI's own frozen network)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", message=".*has no regressor for kernel types.*")
    warnings.filterwarnings("ignore", message=".*lie outside the feature range.*")
    import numpy as np
    import torch
    from tqdm import tqdm

    from nnmeter_nas.graph.onnx_import import onnx_to_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.nni import LatencyProfiler, SpaceFreezer
    from nnmeter_nas.nni.table_builder import ScopeResolver, point_owner_finder
    from nnmeter_nas.nni.choice_points import find_choice_points
    from nnmeter_nas.search_spaces.spos import SPOSSpace, spos_random_sample

    torch.set_num_threads(1)  # batch-1 tracing gains nothing from threads on 2 shared cores
    predictors, synthetic = load_predictors(args.predictors, args.paths)
    devices = [p.device for p in predictors]
    space = SPOSSpace(small_input=args.small)
    shape = space.input_shape
    print(f"space: SPOS {'small 32x32' if args.small else '224x224'}, input {shape}; "
          f"devices: {devices}; samples: {args.samples}; seed {args.seed}; "
          f"full networks from {'SpaceFreezer' if args.fast_freeze else 'NNI freeze'}; "
          f"load average {os.getloadavg()[0]:.1f}")

    t0 = time.perf_counter()
    prof = LatencyProfiler(space, predictors, shape)
    build_s = time.perf_counter() - t0
    meta = prof.table.meta["build"]
    print(f"table: built in {build_s:.1f} s from {meta['covering_samples']} covering "
          f"architectures; fixed part {prof.table.fixed_ms}")
    print(f"table: fixed-part spread across covering architectures {meta['fixed_spread_ms']} ms, "
          f"largest entry spread {meta['max_entry_spread_ms']:.3g} ms")
    if meta["boundary_kernels"]:
        print("table: kernels spanning a choice-point boundary (attributed to their first node's "
              "owner):")
        for b in meta["boundary_kernels"]:
            print(f"   {b['kernel_type']:16s} owners {b['owners']} x{b['count']}")
    else:
        print("table: no kernel spans a choice-point boundary")

    rng = np.random.default_rng(args.seed)
    samples = [spos_random_sample(rng) for _ in range(args.samples)]
    freezer = SpaceFreezer(space) if args.fast_freeze else None
    layout = find_choice_points(space)
    owner = point_owner_finder(layout)
    rel = defaultdict(list)
    absdiff = defaultdict(list)
    worst: dict[str, tuple] = {}
    t0 = time.perf_counter()
    for s in tqdm(samples, desc="full predictions", file=sys.stdout):
        net = freezer.freeze(s) if freezer else space.freeze(s)
        graph = onnx_to_graph(export_onnx(net, shape))
        for p in predictors:
            kernels = p.predict_kernels(graph)
            full = kernels.latency_ms
            table = prof.profile(s, p.device)
            r = (table - full) / full
            rel[p.device].append(r)
            absdiff[p.device].append(table - full)
            if p.device not in worst or abs(r) > abs(worst[p.device][0]):
                worst[p.device] = (r, s, kernels, net)
    full_s = time.perf_counter() - t0

    print(f"\nfull predictions: {args.samples} architectures in {full_s:.1f} s")
    print(f"{'device':28s} {'median |rel|':>13s} {'p95 |rel|':>10s} {'max |rel|':>10s} "
          f"{'mean rel':>10s} {'mean ms':>9s}")
    for dev in devices:
        a = np.abs(np.array(rel[dev]))
        lat = np.array([prof.profile(s, dev) for s in samples])
        print(f"{dev:28s} {np.median(a):13.3e} {np.quantile(a, 0.95):10.3e} {a.max():10.3e} "
              f"{np.mean(rel[dev]):10.3e} {lat.mean():9.4f}")
    print("(relative differences as fractions; targets: median |rel| < 1e-2, max |rel| < 3e-2)")

    for dev in devices:
        r, s, kernels, net = worst[dev]
        print(f"\nworst architecture on {dev}: table {prof.profile(s, dev):.5f} ms, "
              f"full {kernels.latency_ms:.5f} ms ({r:+.4%})")
        resolver = ScopeResolver(net)
        per_owner = defaultdict(float)
        for k in kernels:
            first = owner(resolver.module_path(k.nodes[0])) if k.nodes else -1
            per_owner[layout.points[first].name if first >= 0 else "fixed"] += k.latency_ms
        bd = prof.breakdown(s, dev)
        diffs = sorted(((abs(bd.get(n, 0.0) - per_owner.get(n, 0.0)), n) for n in
                        set(bd) | set(per_owner)), reverse=True)[:5]
        for d, n in diffs:
            print(f"   {n:14s} table {bd.get(n, 0.0):.5f} ms  full {per_owner.get(n, 0.0):.5f} ms"
                  f"  diff {bd.get(n, 0.0) - per_owner.get(n, 0.0):+.2e}")
    if synthetic:
        print("\n!! synthetic predictor: the figures check the table mechanics, not a device")


if __name__ == "__main__":
    main()
