"""Speed of the latency lookup table on NNI's ShuffleNetSpace (SPOS, 224x224).

Prints (medians of repeats, wall and CPU seconds, with the machine's load average since the
machine is shared):

- building the table (``LatencyProfiler(space, predictor, (1, 3, 224, 224))``) for one device;
  target: under 30 s;
- optionally NNI's own ``FlopsProfiler`` on the same space for comparison (``--flops``);
- one ``profile(sample)`` call in microseconds over 10,000 random samples; target: under 50 us.

    python benchmarks/lut_speed.py [--predictor NAME | --path DIR] [--repeats 3] [--flops]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--predictor", default=None, help="predictor name (default: the first "
                    "installed one, else the synthetic test predictor)")
    ap.add_argument("--path", default=None, help="a predictor package directory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--flops", action="store_true", help="also time NNI's FlopsProfiler")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", message=".*has no regressor for kernel types.*")
    import numpy as np
    import torch
    from nni.nas.hub.pytorch import ShuffleNetSpace

    import nnmeter_nas
    from nnmeter_nas.nni import LatencyProfiler

    if args.path:
        predictor = nnmeter_nas.load_predictor(path=args.path)
    elif args.predictor:
        predictor = nnmeter_nas.load_predictor(args.predictor)
    else:
        rows = [r for r in nnmeter_nas.list_predictors() if r.status == "in use"]
        if rows:
            predictor = nnmeter_nas.load_predictor(rows[0].name)
        else:
            from nnmeter_nas.testing import make_dummy_predictor

            print("!! no predictor installed: timing with the synthetic test predictor")
            predictor = make_dummy_predictor()
    shape = (1, 3, 224, 224)
    space = ShuffleNetSpace()
    print(f"ShuffleNetSpace (NNI), input {shape}, device {predictor.device}, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    walls, cpus = [], []
    prof = None
    for _ in range(args.repeats):
        w, c = time.perf_counter(), time.process_time()
        prof = LatencyProfiler(space, predictor, shape)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    print(f"table build: median {statistics.median(walls):.2f} s wall, "
          f"{statistics.median(cpus):.2f} s CPU over {args.repeats} builds "
          f"(all: {', '.join(f'{x:.1f}' for x in walls)} s); "
          f"{prof.table.meta['build']['covering_samples']} covering architectures; "
          f"load average {os.getloadavg()[0]:.1f}; target < 30 s")

    if args.flops:
        from nni.nas.profiler.pytorch.flops import FlopsProfiler

        w, c = time.perf_counter(), time.process_time()
        FlopsProfiler(space, torch.randn(*shape))
        print(f"NNI FlopsProfiler on the same space: {time.perf_counter() - w:.2f} s wall, "
              f"{time.process_time() - c:.2f} s CPU")

    labels = prof.table.labels
    values = {label: prof.table.values_of(label) for label in labels}
    rng = np.random.default_rng(0)
    samples = [{label: values[label][int(i)] for label, i in
                zip(labels, rng.integers(0, 4, size=len(labels)))} for _ in range(args.calls)]
    per_call = []
    for _ in range(5):
        t = time.perf_counter()
        for s in samples:
            prof.profile(s)
        per_call.append((time.perf_counter() - t) / len(samples) * 1e6)
    print(f"profile(sample): median {statistics.median(per_call):.2f} us per call "
          f"(5 repeats of {args.calls} random samples: "
          f"{', '.join(f'{x:.2f}' for x in per_call)}); target < 50 us")


if __name__ == "__main__":
    main()
