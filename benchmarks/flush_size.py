"""How much cache to flush before timing a kernel, so that it costs what it costs in a network.

The builder times every kernel alone, in a loop. Alone, its weights stay in the caches from one
run to the next; inside a network the rest of the network evicts them. This script measures
how far that moves kernel latencies, on networks that are neither test networks of
``benchmarks/accuracy.py`` nor in any search space: random composed networks
(:mod:`nnmeter_nas.builder.compose`, another seed than the accuracy benchmark's).

For every network: its latency (interleaved passes, as the accuracy benchmark), and
onnxruntime's per-operator profile, whose kernel times are scaled so that they sum to the
measured latency (the profiler's own cost per operator and the layout conversions no kernel
holds are spread over all kernels). Then every convolution and depthwise convolution of those
networks is timed alone in the builder's harness (:class:`~nnmeter_nas.builder.measure.
KernelMeasurer`) with ``--flush`` MiB written before every run, and the sums are compared,
by kernel kind and output map size: ``harness / in-network`` (1.00 = right).

    python benchmarks/flush_size.py                      # 24 networks, flushes 0,8,16,32 MiB
    python benchmarks/flush_size.py --networks 40 --flush 0,16

Prints the table and writes ``benchmarks/results/flush_size_<predictor>.txt``.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _bin(hw: int) -> int:
    return 7 if hw <= 8 else 14 if hw <= 16 else 28 if hw <= 32 else 56


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--flush", default="0,8,16,32", help="MiB, comma-separated")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from accuracy import default_package
    from kernel_vs_network import compare

    from nnmeter_nas.builder.backends import backend_from_settings
    from nnmeter_nas.builder.compose import composed_networks
    from nnmeter_nas.builder.kernel_specs import default_specs
    from nnmeter_nas.builder.measure import KernelMeasurer
    from nnmeter_nas.builder.network_timing import measure_interleaved
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.predictor import LatencyPredictor

    predictor = LatencyPredictor.from_path(default_package())
    flushes = [float(x) for x in args.flush.split(",")]
    backend = backend_from_settings(predictor.package.manifest["source"]["backend"])
    backend.calibrate_overhead()
    nets = composed_networks(args.networks, args.seed)
    protos = [export_onnx(c.module, c.input_shape) for c in nets]
    print(f"{predictor.name}: {len(nets)} composed networks (seed {args.seed}); measuring ...",
          flush=True)
    visits = measure_interleaved(backend, [p.SerializeToString() for p in protos],
                                 args.passes, seed=args.seed, pause_s=1.0)
    specs = default_specs(predictor.fusion_rules)
    configs: dict[tuple[str, str], list[tuple[float, int]]] = collections.OrderedDict()
    for proto, v in zip(protos, visits):
        truth = float(np.median(v))
        _, per_kernel, unmatched = compare(predictor, backend, proto, runs=20)
        scale = truth / (sum(t for _, t in per_kernel) + sum(unmatched.values()))
        kernels = {k.name: k for k in predictor.kernels(proto)}
        for kp, t in per_kernel:
            k = kernels[kp.name]
            if not k.type.startswith(("conv", "dwconv")) or k.input_shapes[0][-1] == 3:
                continue
            a = k.attrs
            ks = a["ks"][0] if isinstance(a["ks"], (list, tuple)) else a["ks"]
            st = a["strides"][0] if isinstance(a["strides"], (list, tuple)) else a["strides"]
            act = "relu" if "relu" in k.type else "none"
            hw, cin, cout = k.input_shapes[0][1], k.input_shapes[0][-1], k.output_shapes[0][-1]
            if k.type.startswith("dwconv"):
                key = ("dwconv-bn-relu", json.dumps(dict(hw=hw, c=cin, k=ks, s=st, act=act)))
            else:
                key = ("conv-bn-relu", json.dumps(dict(hw=hw, cin=cin, cout=cout, k=ks, s=st,
                                                 groups=a.get("group", 1), act=act,
                                                 n_add=int("add" in k.type))))
            configs.setdefault(key, []).append((t * scale, k.output_shapes[0][1]))
    measurer = KernelMeasurer(backend, predictor.fusion_rules,
                              feature_set=predictor.package.feature_set)
    prepared = [measurer.prepare(specs[s], json.loads(c)) for s, c in configs]
    base_plan = backend.plan
    alone: dict[float, list[float]] = {}
    for fl in flushes:
        print(f"timing {len(prepared)} kernels alone, {fl:g} MiB flushed ...", flush=True)
        backend.plan = replace(base_plan, flush_mb=fl, runs_per_round=2,
                               max_runs_per_round=3) if fl else base_plan
        recs = []
        for i in range(0, len(prepared), 16):
            recs += measurer.measure(prepared[i:i + 16], plan=backend.plan)
        alone[fl] = [r.latency_ms for r in recs]
    backend.plan = base_plan
    rows: dict[tuple[str, int], collections.Counter] = collections.defaultdict(
        collections.Counter)
    for i, ((spec, _), uses) in enumerate(configs.items()):
        for in_net, hw_out in uses:
            for key in ((spec.split("-")[0], _bin(hw_out)), ("all", 0)):
                rows[key]["in_net"] += in_net
                rows[key]["n"] += 1
                for fl in flushes:
                    rows[key][fl] += alone[fl][i]
    lines = [f"{predictor.name}: harness / in-network latency of the convolutions of "
             f"{len(nets)} random composed networks (seed {args.seed}), by output map size",
             f"{'kind':8s} {'map':>5s} {'kernels':>8s} {'in-net ms':>10s} "
             + " ".join(f"{f'{fl:g} MiB':>8s}" for fl in flushes)]
    for key in sorted(rows, key=lambda k: (k[0] == "all", k)):
        r = rows[key]
        lines.append(f"{key[0]:8s} {key[1] if key[1] else '':>5} {r['n']:8d} "
                     f"{r['in_net']:10.3f} "
                     + " ".join(f"{r[fl] / r['in_net']:8.2f}" for fl in flushes))
    text = "\n".join(lines)
    print(text)
    out = args.out or REPO / "benchmarks" / "results" / f"flush_size_{predictor.name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
