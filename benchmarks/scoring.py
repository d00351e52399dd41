#!/usr/bin/env python
"""Throughput of ``nnmeter_nas.parallel.score`` on this machine.

Sections (every figure printed is measured by this run; rates are medians of --repeats):

  table   SPOS (224x224) lookup-table scoring: time to build one device's table; candidate-device
          scores per second of the vectorised lookup on one core (target >= 1,000,000), with
          candidate generation, and end to end through score() (DataFrame included); and the
          end-to-end rate through Ray with 1 and 2 workers.
  full    SPOS full-mode scoring (freeze, read with the torch front end, predict): candidates per
          second in this process, and through Ray with 1 and 2 workers, steady state (after each
          worker's first chunk) and end to end (Ray start and worker warm-up included). Target:
          2 workers >= 1.7x one worker.
  small   Ray overhead against a plain loop for small full-mode jobs, and the job size under
          which score() stays in-process (compared with RAY_BREAK_EVEN_S in nnmeter_nas.parallel).

Devices: every installed/built-in predictor if there is one, else --dummy-devices synthetic
predictors (nnmeter_nas.testing.make_dummy_predictor; lookups cost the same per device whatever
the regressors, table builds and kernel predictions cost about what real ones do).

Usage
  python benchmarks/scoring.py                 # everything (about 10 minutes on 2 idle cores)
  python benchmarks/scoring.py --quick         # smaller jobs, 1 repeat
  python benchmarks/scoring.py --sections table
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _predictors(args):
    from nnmeter_nas.packages.registry import list_predictors
    from nnmeter_nas.parallel.api import resolve_devices
    from nnmeter_nas.testing import make_dummy_predictor

    if args.devices:
        return resolve_devices(args.devices), "given"
    if any(r.status == "in use" for r in list_predictors()):
        return resolve_devices("all"), "installed/built-in"
    d = tempfile.mkdtemp(prefix="bench-preds-")
    preds = []
    for i in range(args.dummy_devices):
        p = make_dummy_predictor(f"dummy{i}", directory=d)
        for reg in p.package.regressors.values():
            reg.value *= 1.0 + 0.5 * i
        preds.append(p)
    return preds, "synthetic (make_dummy_predictor)"


def _median_rate(fn, repeats):
    rates = [fn() for _ in range(repeats)]
    return statistics.median(rates), rates


def section_table(args, preds):
    from nnmeter_nas.nni.choice_points import find_choice_points
    from nnmeter_nas.parallel import score
    from nnmeter_nas.parallel.codes import LabelSpace
    from nnmeter_nas.parallel.costs import build_cost_table
    from nnmeter_nas.parallel.lookup import CodeTable
    from nnmeter_nas.parallel.spaces import resolve_space
    from nnmeter_nas.nni.profiler import LatencyProfiler

    print("\n== table mode, SPOS 224x224 ==")
    spec = resolve_space("spos")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = spec.build()
        layout = find_choice_points(space)
        labels = LabelSpace.from_label_values(layout.label_values)
        t0 = time.perf_counter()
        cost = build_cost_table(space, spec.input_shape, layout=layout)
        t_cost = time.perf_counter() - t0
        tables, lts, build = [], [], []
        for p in preds:
            t0 = time.perf_counter()
            lt = LatencyProfiler(space, p, spec.input_shape).table
            build.append(time.perf_counter() - t0)
            lts.append(lt)
            tables.append(CodeTable.from_latency_table(lt, labels))
    print(f"table build: FLOPs/params {t_cost:.2f} s; latency per device "
          f"median {statistics.median(build):.2f} s (min {min(build):.2f}, max {max(build):.2f})")
    full = CodeTable.concat([cost] + tables)
    D = len(preds)
    n = args.table_n
    chunk = 65536
    codes = [labels.random_codes(min(chunk, n - s), 1, i)
             for i, s in enumerate(range(0, n, chunk))]
    lat_only = CodeTable.concat(tables)

    def lookup():
        t0 = time.perf_counter()
        for c in codes:
            lat_only.evaluate(c)
        return n * D / (time.perf_counter() - t0)

    def lookup_with_generation():
        t0 = time.perf_counter()
        for i, s in enumerate(range(0, n, chunk)):
            full.evaluate(labels.random_codes(min(chunk, n - s), 2, i))
        return n * D / (time.perf_counter() - t0)

    r, rs = _median_rate(lookup, args.repeats)
    print(f"lookup, one core ({D} devices, {n:,} candidates): {r:,.0f} candidate-device "
          f"scores/s  (repeats: {', '.join(f'{x:,.0f}' for x in rs)})  target >= 1,000,000: "
          f"{'MET' if r >= 1e6 else 'NOT MET'}")
    r, _ = _median_rate(lookup_with_generation, args.repeats)
    print(f"generation + lookup incl. FLOPs/params columns: {r:,.0f} scores/s")
    # naive per-sample dictionary lookups of the profiler, for scale
    samples = labels.decode(codes[0][:20000])
    t0 = time.perf_counter()
    for s in samples:
        for lt in lts:
            lt.latency(s, lt.devices[0])
    print(f"(for scale: LatencyTable.latency(sample) one by one: "
          f"{len(samples) * D / (time.perf_counter() - t0):,.0f} scores/s)")

    def end_to_end(**kw):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                df = score("spos", n=n, seed=3, devices=preds, table=lts, progress=False, **kw)
                dt = time.perf_counter() - t0
            assert len(df) == n
            return n * D / dt
        return run

    r, _ = _median_rate(end_to_end(in_process=True), args.repeats)
    print(f"score() in-process end to end (tables given; codes, lookups, DataFrame): "
          f"{r:,.0f} scores/s")
    for w in (1, 2):
        r, _ = _median_rate(end_to_end(in_process=False, num_workers=w), 1)
        print(f"score() through Ray, {w} worker(s), end to end incl. Ray start: {r:,.0f} scores/s")


def _timed_full(n, preds, chunk, **kw):
    from nnmeter_nas.parallel import score

    events = []
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = score("spos", n=n, seed=5, devices=preds, mode="full", progress=False,
                   chunk_size=chunk, on_progress=lambda d, t: events.append(
                       (time.perf_counter(), d, time.process_time())), **kw)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert len(df) == n
    # Steady state: the last two thirds of the run, when every worker has warmed up.
    (t_a, d_a, c_a), (t_b, d_b, c_b) = events[len(events) // 3], events[-1]
    steady = (d_b - d_a) / max(t_b - t_a, 1e-9) if d_b > d_a else float("nan")
    # this process's CPU time over the same stretch (in-process runs: the scoring itself)
    steady_cpu = (d_b - d_a) / max(c_b - c_a, 1e-9) if d_b > d_a else float("nan")
    return {"total_s": total, "end_to_end": n / total, "steady": steady, "cpu_s": cpu,
            "steady_cpu": steady_cpu,
            "first_result_s": events[0][0] - t0, "info": df.attrs["nnmeter_nas"]}


def section_full(args, preds):
    print("\n== full mode, SPOS 224x224 ==")
    n, chunk = args.full_n, 4
    res = {}
    modes = (("in-process", dict(in_process=True)),
             ("ray 1 worker", dict(in_process=False, num_workers=1)),
             ("ray 2 workers", dict(in_process=False, num_workers=2)))
    for label, kw in [(lbl, kw) for lbl, kw in modes if lbl in args.full_modes]:
        runs = [_timed_full(n, preds, chunk, **kw) for _ in range(args.repeats)]
        steady = statistics.median(r["steady"] for r in runs)
        e2e = statistics.median(r["end_to_end"] for r in runs)
        first = statistics.median(r["first_result_s"] for r in runs)
        res[label] = (steady, e2e, first)
        print(f"{label:14s}: steady {steady:.3f} candidates/s, end to end {e2e:.3f} "
              f"candidates/s ({n} candidates x {len(preds)} devices; first chunk after "
              f"{first:.1f} s)  steady repeats: "
              f"{', '.join('%.3f' % r['steady'] for r in runs)}")
        if label == "in-process":
            cpu_rate = statistics.median(r["steady_cpu"] for r in runs)
            cpu_e2e = statistics.median(n / r["cpu_s"] for r in runs)
    if "in-process" in res:
        print(f"per worker (in-process steady): {res['in-process'][0]:.2f} candidates/s  "
              f"target >= 10: {'MET' if res['in-process'][0] >= 10 else 'NOT MET'}")
        print(f"per CPU-second of this process (in-process steady, all {len(preds)} devices): "
              f"{cpu_rate:.2f} candidates/s, end to end {cpu_e2e:.2f} (what a worker with a "
              f"core of its own gets)  target >= 10: {'MET' if cpu_rate >= 10 else 'NOT MET'}")
    if "ray 1 worker" not in res or "ray 2 workers" not in res:
        return res
    s1, s2 = res["ray 1 worker"][0], res["ray 2 workers"][0]
    print(f"speed-up 2 vs 1 workers (steady): {s2 / s1:.2f}x  target >= 1.7x: "
          f"{'MET' if s2 / s1 >= 1.7 else 'NOT MET'}")
    e1, e2 = res["ray 1 worker"][1], res["ray 2 workers"][1]
    print(f"speed-up 2 vs 1 workers (end to end, startup included): {e2 / e1:.2f}x")
    return res


def section_small(args, preds, full_res=None):
    from nnmeter_nas.parallel.api import RAY_BREAK_EVEN_S

    print("\n== Ray overhead for small jobs (full mode, SPOS) ==")
    n = args.small_n
    loops, rays, steadies = [], [], []
    for _ in range(args.repeats):
        run = _timed_full(n, preds, 4, in_process=True)
        loops.append(run["total_s"])
        steadies.append(run["steady"])
        rays.append(_timed_full(n, preds, 4, in_process=False, num_workers=2)["total_s"])
    loop, ray_t = statistics.median(loops), statistics.median(rays)
    per_cand = 1.0 / statistics.median(steadies)
    # Both runs pay the same driver-side setup; Ray adds its overhead O and halves the work:
    # ray_t - loop = O - n * c / 2  ->  O; Ray pays off when n * c / 2 > O.
    overhead = ray_t - loop + n * per_cand / 2
    breakeven = 2 * overhead / per_cand
    print(f"{n} candidates: score() in-process {loop:.1f} s, through Ray (2 workers, fresh "
          f"start) {ray_t:.1f} s -> Ray overhead ~{overhead:.1f} s (start, worker imports, "
          f"actor setup)")
    print(f"{per_cand:.2f} s per candidate in-process: Ray pays off above ~{breakeven:.0f} "
          f"candidates (~{breakeven * per_cand:.0f} s of serial work) with 2 workers")
    print(f"score() stays in-process while the estimated remaining work is below "
          f"{RAY_BREAK_EVEN_S:.0f} s x W/(W-1) = {RAY_BREAK_EVEN_S * 2:.0f} s for W=2 "
          f"(RAY_BREAK_EVEN_S; measured overhead here {overhead:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="table,full,small")
    ap.add_argument("--devices", nargs="*", help="predictor names/paths (default: all, or dummies)")
    ap.add_argument("--dummy-devices", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--table-n", type=int, default=1_000_000)
    ap.add_argument("--full-n", type=int, default=48)
    ap.add_argument("--small-n", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full-modes", default="in-process,ray 1 worker,ray 2 workers",
                    help="comma-separated subset of the full section's runs (e.g. in-process "
                         "alone, where other cores are busy)")
    args = ap.parse_args()
    args.full_modes = [m.strip() for m in args.full_modes.split(",")]
    if args.quick:
        args.repeats, args.table_n, args.full_n, args.small_n = 1, 262_144, 16, 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds, origin = _predictors(args)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"devices: {[p.device for p in preds]} ({origin})")
    sections = args.sections.split(",")
    if "table" in sections:
        section_table(args, preds)
    res = section_full(args, preds) if "full" in sections else None
    if "small" in sections:
        section_small(args, preds, res)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
