"""In-sample errors of a device's package fit (every built-in measurement seen) on its
ImageNet networks: nn-Meter's reference networks and, where the device has them, the Pixel 4
networks (predicted as the Pixel 4 measured them, with the fitted source factors). Same samples
and settings as ``benchmarks/four_devices.py`` (:mod:`nnmeter_nas.fitting.builtin`).

    python benchmarks/four_devices_residuals.py adreno640gpu_tflite21

Where the fit cannot follow both sources at once, their networks of one family come out on
opposite sides (docs/four_devices.md, round 4).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nnmeter_nas.fitting.builtin import BuiltinData  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("device")
    args = ap.parse_args(argv)
    data = BuiltinData()
    fit, _ = data.fit(args.device)
    nets = data.imagenet(args.device)
    pred = fit.predict(nets)
    print(f"{args.device}: package fit, in-sample error (measured -> predicted, ms), "
          f"sorted by error; factors {fit.factors_}")
    print("  launch coefficients (ms per kernel): " + ", ".join(
        f"{k.split(':')[0]} {v:.4f}" for k, v in sorted(fit.theta_.items())
        if k.endswith(":launch") and v > 0))
    rows = sorted(zip(nets, pred), key=lambda t: t[1] / t[0].latency_ms)
    for s, p in rows:
        print(f"  {s.source:18s} {s.name:26s} {s.latency_ms:8.2f} {p:8.2f} "
              f"{100 * (p / s.latency_ms - 1):+6.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
