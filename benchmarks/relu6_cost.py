"""What a ReLU6 costs against a ReLU after a convolution, in the builder's harness on this host.

nn-Meter's kernel types (and the ``nnmeter-nas-2`` feature set) call both ``relu``; onnxruntime's
CPU convolutions fuse a ReLU but not a ReLU6 (an ONNX ``Clip``), which then costs a pass over
the output. This script times a few MobileNetV2-like convolutions with no activation, ReLU and
ReLU6 exactly as the builder does (:class:`~nnmeter_nas.builder.measure.KernelMeasurer`, the
kernel between stand-ins, per-call cost and stand-ins taken out) and prints the latencies
with the built-in predictor's for the same kernels.

    python benchmarks/relu6_cost.py

Writes ``benchmarks/results/relu6_cost_<predictor>.txt``.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CONFIGS = [
    ("conv-bn-relu", "stem 3->32 3x3/2 on 224x224",
     dict(hw=224, cin=3, cout=32, k=3, s=2, groups=1, n_add=0)),
    ("dwconv-bn-relu", "depthwise 32 3x3 on 112x112", dict(hw=112, c=32, k=3, s=1)),
    ("conv-bn-relu", "1x1 16->96 on 112x112", dict(hw=112, cin=16, cout=96, k=1, s=1, groups=1,
                                                  n_add=0)),
    ("dwconv-bn-relu", "depthwise 144 3x3 on 56x56", dict(hw=56, c=144, k=3, s=1)),
    ("conv-bn-relu", "1x1 32->192 on 28x28", dict(hw=28, cin=32, cout=192, k=1, s=1, groups=1,
                                                 n_add=0)),
    ("dwconv-bn-relu", "depthwise 576 3x3 on 14x14", dict(hw=14, c=576, k=3, s=1)),
]


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    warnings.filterwarnings("ignore")
    from accuracy import default_package

    from dataclasses import replace

    from nnmeter_nas.builder.backends import backend_from_settings
    from nnmeter_nas.builder.kernel_specs import default_specs
    from nnmeter_nas.builder.measure import KernelMeasurer
    from nnmeter_nas.predictor import LatencyPredictor

    pred = LatencyPredictor.from_path(default_package())
    backend = backend_from_settings(pred.package.manifest["source"]["backend"])
    backend.plan = replace(backend.plan, rounds=12)
    backend.calibrate_overhead()
    specs = default_specs(pred.fusion_rules)
    measurer = KernelMeasurer(backend, pred.fusion_rules, feature_set=pred.package.feature_set)
    acts = ("none", "relu", "relu6")
    jobs = [(spec, what, {**cfg, "act": a}) for spec, what, cfg in CONFIGS for a in acts]
    prepared = [measurer.prepare(specs[s], c) for s, _, c in jobs]
    records = measurer.measure(prepared)
    lines = [f"{pred.name} ({pred.package.feature_set}): kernel latency in the builder's "
             "harness / predicted (us)",
             f"{'kernel':30s} " + " ".join(f"{a:>16s}" for a in acts) + f" {'relu6/relu':>11s}"]
    for i, (spec, what, _) in enumerate(CONFIGS):
        cells, measured = [], {}
        for j, a in enumerate(acts):
            k = 3 * i + j
            p = float(pred.predict_kernel_features(spec, np.asarray([prepared[k].features]))[0])
            measured[a] = records[k].latency_ms
            cells.append(f"{records[k].latency_ms * 1e3:7.1f} / {p * 1e3:6.1f}")
        lines.append(f"{what:30s} " + " ".join(f"{c:>16s}" for c in cells)
                     + f" {measured['relu6'] / measured['relu']:11.2f}")
    text = "\n".join(lines)
    print(text)
    out = REPO / "benchmarks" / "results" / f"relu6_cost_{pred.name}.txt"
    out.write_text(text + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
