"""Where a built x86 predictor goes wrong inside a network: kernel by kernel.

For each network, onnxruntime's profiler times every node of the optimised graph *inside the
network*; the nodes are matched to the engine's kernels (by the ONNX node names each kernel
holds) and the profiled time of each kernel is set beside its prediction. A kernel predicted
well alone but not in the network points at context the kernel-level model cannot see
(weights evicted from the caches by the rest of the network, layout conversions that
onnxruntime inserts between operators).

The profiler's times are wall-clock and include a little of its own cost per node; on
networks of many tiny nodes their sum exceeds the network's measured latency.

    python benchmarks/kernel_vs_network.py                       # 2 SPOS, 2 NB201, 2 zoo models
    python benchmarks/kernel_vs_network.py --networks spos-000,resnet18 --kernels

Networks are read from the ONNX cache of benchmarks/accuracy.py (``runs/accuracy_onnx``; run
``benchmarks/accuracy.py --export-only`` first).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compare(predictor, backend, proto, runs: int = 40):
    """``(per_regressor, per_kernel, unmatched_ms)``: profiled vs predicted ms by regressor,
    the same per kernel, and profiled time of nodes that no kernel holds (layout conversions
    inserted by onnxruntime, for instance)."""
    nodes = backend.profile_nodes(proto.SerializeToString(), runs=runs)
    profiled: dict[str, float] = defaultdict(float)
    for n in nodes:
        profiled[n.name] += n.ms
    used: set[str] = set()
    per_reg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    per_kernel = []
    for k in predictor.predict_kernels(proto):
        t = 0.0
        for onnx_name in k.nodes:
            # onnxruntime keeps the first node's name for a fused node (and suffixes layout
            # variants), so a kernel owns every profiled node whose name starts with its own.
            for name, ms in profiled.items():
                if name not in used and name.startswith(onnx_name):
                    t += ms
                    used.add(name)
        per_reg[k.regressor][0] += t
        per_reg[k.regressor][1] += k.latency_ms
        per_kernel.append((k, t))
    unmatched = {name: ms for name, ms in profiled.items() if name not in used}
    return dict(per_reg), per_kernel, unmatched


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=None,
                    help="default: the built-in x86 predictor for this host's instruction set")
    ap.add_argument("--networks", default="spos-000,spos-001,nb201-000,nb201-001,"
                                           "mobilenet_v2,resnet18")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "accuracy_onnx")
    ap.add_argument("--kernels", action="store_true", help="print every convolution kernel")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import onnx

    from nnmeter_nas.builder.backends import backend_from_settings
    from nnmeter_nas.predictor import LatencyPredictor

    if args.package is None:
        from accuracy import default_package

        args.package = default_package()
    predictor = LatencyPredictor.from_path(args.package)
    backend = backend_from_settings(predictor.package.manifest["source"]["backend"])
    print(f"predictor {predictor.name}; times in ms (profiled inside the network / predicted)")
    for name in args.networks.split(","):
        path = args.cache / f"{name}.onnx"
        if not path.exists():
            print(f"error: {path} not found; run benchmarks/accuracy.py --export-only first",
                  file=sys.stderr)
            return 2
        per_reg, per_kernel, unmatched = compare(predictor, backend, onnx.load(str(path)))
        prof = sum(v[0] for v in per_reg.values()) + sum(unmatched.values())
        pred = sum(v[1] for v in per_reg.values())
        print(f"\n{name}: profiled {prof:.3f}, predicted {pred:.3f} "
              f"({pred / prof - 1:+.1%}); nodes held by no kernel {sum(unmatched.values()):.3f}")
        for reg, (t, p) in sorted(per_reg.items(), key=lambda kv: -kv[1][0]):
            if t > 0.001 or p > 0.001:
                print(f"  {reg:16s} {t:8.3f} / {p:8.3f} ({p / max(t, 1e-9) - 1:+.0%})")
        top = sorted(unmatched.items(), key=lambda kv: -kv[1])[:4]
        if top:
            print("  not in any kernel: " + ", ".join(f"{n[-40:]} {ms:.3f}" for n, ms in top))
        if args.kernels:
            for k, t in per_kernel:
                if "conv" in k.regressor:
                    f = [round(x, 2) for x in k.features[:5]]
                    print(f"    {k.kernel_type:18s} hw,cin,cout,k,s={f} {t * 1e3:7.1f} us / "
                          f"{k.latency_ms * 1e3:7.1f} us ({k.latency_ms / max(t, 1e-9) - 1:+.0%})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
