"""Where a left-out reference network's error sits: each kernel type's share of its predicted
latency, in the package fit and in the fit that leaves the network out (same samples and
settings as ``benchmarks/four_devices.py``, through :mod:`nnmeter_nas.fitting.builtin`).

    python benchmarks/four_devices_breakdown.py myriadvpu_openvino2019r2 shufflenetv2_0 densenet_0

Prints, per network, the measured latency, both predictions and per kernel type the summed
kernel latencies (ms) of each fit.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nnmeter_nas.fitting.builtin import BuiltinData  # noqa: E402


def by_type(fit, sample) -> dict[str, float]:
    """Summed kernel latency (ms, corrections included) of each kernel type in ``sample``."""
    out: dict[str, float] = defaultdict(float)
    for cfg, n in sample.configs.items():
        out[cfg[0]] += n * fit.kernel_ms(cfg)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("device")
    ap.add_argument("networks", nargs="+", help="reference network labels, e.g. resnet18_0")
    args = ap.parse_args(argv)
    data = BuiltinData()
    refs = {s.name: s for s in data.references(args.device)}
    full, _ = data.fit(args.device)
    for name in args.networks:
        s = refs[name]
        left, _ = data.fit(args.device, exclude={name})
        a, b = by_type(full, s), by_type(left, s)
        print(f"\n{name} on {args.device}: measured {s.latency_ms:.2f} ms; package fit "
              f"{full.predict([s])[0]:.2f}, left out {left.predict([s])[0]:.2f} (network "
              f"overhead {full.overhead_ms_['native']:.2f} / {left.overhead_ms_['native']:.2f})")
        for reg in sorted(set(a) | set(b), key=lambda r: -a.get(r, 0.0)):
            n = sum(k for c, k in s.configs.items() if c[0] == reg)
            print(f"  {reg:18s} {n:4d} kernels  package {a.get(reg, 0.0):8.2f} ms  "
                  f"left out {b.get(reg, 0.0):8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
