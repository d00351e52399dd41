"""Where a left-out reference network's error sits: each kernel type's share of its predicted
latency, in the package fit and in the fit that leaves the network out (same samples and
settings as ``benchmarks/four_devices.py``, through :mod:`nnmeter_nas.fitting.builtin`).

    python benchmarks/four_devices_breakdown.py myriadvpu_openvino2019r2 shufflenetv2_0 densenet_0

Prints, per network, the measured latency, both predictions and per kernel type the summed
kernel latencies (ms) of each fit. ``--terms PATTERN ...`` also prints the fitted coefficients
whose keys match (shell-style, e.g. ``'*:launch'``: ms per kernel) in both fits;
``--term-set NAME`` fits with another term set than the device's built-in one (e.g.
``default`` gives the Adreno 630's ``multi-5`` fit).

    python benchmarks/four_devices_breakdown.py adreno630gpu_tflite21 mobilenetv2_0 \
        --term-set default --terms '*:launch' 'dwconv:macs'
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nnmeter_nas.fitting.builtin import BuiltinData, fit_params  # noqa: E402
from nnmeter_nas.fitting.device_fit import DeviceLatencyFit  # noqa: E402


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
    ap.add_argument("--terms", nargs="+", default=(), metavar="PATTERN",
                    help="also print the fitted coefficients whose keys match")
    ap.add_argument("--term-set", default=None, help="fit with this term set instead")
    args = ap.parse_args(argv)
    import fnmatch

    data = BuiltinData()
    refs = {s.name: s for s in data.references(args.device)}
    settings = fit_params(args.device)
    if args.term_set:
        settings["term_set"] = args.term_set

    def fit(exclude=()):
        if not args.term_set:
            return data.fit(args.device, exclude=exclude)[0]
        return DeviceLatencyFit(**settings).fit(data.training_samples(args.device,
                                                                      exclude=exclude))

    def coefficients(label, f):
        if args.terms:
            keys = sorted(k for k in f.theta_ if any(fnmatch.fnmatchcase(k, p)
                                                     for p in args.terms))
            print(f"  {label}: " + ", ".join(f"{k} {f.theta_[k]:.3g}" for k in keys))
    print(f"{args.device}, term set {settings.get('term_set', 'default')}")
    full = fit()
    coefficients("package fit", full)
    for name in args.networks:
        s = refs[name]
        left = fit(exclude={name})
        a, b = by_type(full, s), by_type(left, s)
        print(f"\n{name} on {args.device}: measured {s.latency_ms:.2f} ms; package fit "
              f"{full.predict([s])[0]:.2f}, left out {left.predict([s])[0]:.2f} (network "
              f"overhead {full.overhead_ms_['native']:.2f} / {left.overhead_ms_['native']:.2f})")
        for reg in sorted(set(a) | set(b), key=lambda r: -a.get(r, 0.0)):
            n = sum(k for c, k in s.configs.items() if c[0] == reg)
            print(f"  {reg:18s} {n:4d} kernels  package {a.get(reg, 0.0):8.2f} ms  "
                  f"left out {b.get(reg, 0.0):8.2f} ms")
        coefficients(f"fit without {name}", left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
