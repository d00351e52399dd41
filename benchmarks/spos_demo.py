#!/usr/bin/env python
"""The two SPOS examples with their defaults: final accuracy, latency against the budget, time.

Runs ``examples/multi_trial_spos.py`` and ``examples/train_latency_constrained.py`` (each in a
fresh process, with its default settings and a fresh output folder, so the latency table is
built inside the timed run) and prints, per example, the held-out accuracy of the final
architecture trained alone, its latency at 1x3x224x224 on the budget device against the budget,
and the wall and CPU time of the whole run. Targets (issue 15): accuracy >= 90%, latency within
the budget, at most 5 min per run on the 2-core machine.

    python benchmarks/spos_demo.py [--only multi_trial_spos] [--out runs/spos_demo] [-- ARGS]

Extra arguments after ``--`` go to both examples. Writes ``benchmarks/results/spos_demo.txt``
with the printout unless ``--no-save``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"multi_trial_spos": "multi_trial_spos.py",
            "train_latency_constrained": "train_latency_constrained.py"}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(name: str, out: Path, extra: list[str]) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(ROOT / "examples" / EXAMPLES[name]), "--out", str(out), *extra]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    t0, c0 = time.perf_counter(), _cpu_children()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    res = json.loads((out / "result.json").read_text())
    if name == "multi_trial_spos":
        acc = res["chosen"]["test_accuracy"]
        ms = res["chosen"]["latency_ms"][res["device"]]
        limit = res["budget_ms"]
        arch = res["chosen"]["arch"]
        import csv
        with open(out / "candidates.csv") as f:
            scores = sorted(float(r["supernet_accuracy"]) for r in csv.DictReader(f))
        spread = (f"; {len(scores)} candidates' supernet (inherited-weight) validation accuracy: "
                  f"median {scores[len(scores) // 2]:.1%}, max {scores[-1]:.1%} (chance 10%)")
    else:
        acc = res["accuracy"]
        ms = res["derived_latency_ms"][res["device"]]
        limit = res["target_ms"]
        arch = res["derived_arch_code"]
        spread = ""
    return {"name": name, "accuracy": acc, "latency_ms": ms, "limit_ms": limit,
            "device": res["device"], "arch": arch, "wall_s": wall, "cpu_s": cpu,
            "proxy": res.get("proxy"), "spread": spread, "stdout_tail": proc.stdout[-1500:]}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=sorted(EXAMPLES), default=None)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "spos_demo")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    names = [args.only] if args.only else list(EXAMPLES)
    lines = [f"# python benchmarks/spos_demo.py {' '.join(argv + (['--'] + extra if extra else []))}",
             f"# {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, "
             f"affinity {sorted(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.1f}"]
    print("\n".join(lines), flush=True)
    for name in names:
        r = run_one(name, args.out / name, extra)
        ok_acc = r["accuracy"] >= 0.90
        ok_lat = r["latency_ms"] <= r["limit_ms"] * (1 + 1e-9)
        ok_time = r["wall_s"] <= 300
        line = (f"{name}: held-out accuracy {r['accuracy']:.1%} ({'>= 90%' if ok_acc else 'BELOW 90%'}); "
                f"{r['arch']} {r['latency_ms']:.3f} ms on {r['device']} at 1x3x224x224, "
                f"limit {r['limit_ms']:.3f} ms ({'met' if ok_lat else 'MISSED'}); "
                f"{r['wall_s']:.0f} s wall ({'<= 5 min' if ok_time else 'OVER 5 min'}), "
                f"{r['cpu_s']:.0f} s CPU; proxy {r['proxy']}{r['spread']}")
        print(line, flush=True)
        lines.append(line)
    if not args.no_save:
        dest = ROOT / "benchmarks" / "results" / "spos_demo.txt"
        dest.write_text("\n".join(lines) + "\n")
        print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
