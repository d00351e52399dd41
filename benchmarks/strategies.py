#!/usr/bin/env python
"""Latency-aware search strategies against NNI 3's stock ones, on NAS-Bench-201 cells whose
latency was measured on nn-Meter's four devices (../shared/data/nb201_four_devices/).

Every run is a real ``NasExperiment`` over ``NasBench201Space`` restricted to the measured cells,
with NNI's sequential engine and a tabular evaluator (accuracy from the table, reported through
``nni.report_final_result``). A run evaluates up to max(--budgets) architectures; the results at
each smaller budget are read off the same run's first n evaluations (no strategy here knows its
budget, so this equals a run stopped at n).

Tasks
  single  best accuracy under a budget on one device, budgets at the 25th/50th/75th percentile of
          that device's measured latencies, for each device (regret = best feasible accuracy in
          the table - best feasible accuracy found, in accuracy points; lower is better).
  all4    the same with budgets at that percentile on all four devices at once.
  pareto  accuracy vs latency on one device: hypervolume of the evaluated architectures divided
          by the hypervolume of the table's true front (reference point: lowest accuracy and
          highest latency among the measured cells; higher is better, 1.0 = the whole front).

Strategies
  nni-random      NNI Random, wrapped with a latency filter (Chain(Random, filter))
  nni-evolution   NNI RegularizedEvolution(population 20, tournament 5, mutation_prob 1/6),
                  wrapped with a latency filter
  c-random        ConstrainedRandom (ours)
  c-evolution     ConstrainedEvolution (ours; population 20, tournament 5, hard budgets,
                  budget_preference 10, its default, picked on a pilot of seeds 0-5)
  c-evo-uniform   the same with budget_preference 0 (uniform feasible mutation; ablation)
  c-evo-mnas      ConstrainedEvolution with MnasNetReward(-0.07, -0.07) (soft targets)
  nsga2           MultiObjectiveEvolution (ours; population 20), pareto task only
In the pareto task there is no budget; the NNI strategies run unwrapped. By default c-random and
c-evo-uniform are left out to save time (--strategies picks them): with the same seed c-random
draws exactly the samples nni-random draws and trains the same ones, so it repeats its numbers.

Usage
  python benchmarks/strategies.py --quick          # 3 seeds, budgets 20/50, one device (~1 min)
  python benchmarks/strategies.py                  # 20 seeds, budgets 50/100/200, all tasks
  python benchmarks/strategies.py --seeds 30 --jobs 2 --json results.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PERCENTILES = (25, 50, 75)
OURS_CONSTRAINED = ("c-random", "c-evolution", "c-evo-uniform", "c-evo-mnas")
NNI_BASELINES = ("nni-random", "nni-evolution")


# ----------------------------------------------------------------------------- tasks

@dataclass
class Task:
    name: str                    # e.g. "single/cortexA76cpu_tflite21/p25"
    kind: str                    # single | all4 | pareto
    budgets: dict = field(default_factory=dict)   # {device: ms}
    device: str | None = None    # pareto objective device
    best_acc: float = float("nan")   # best feasible accuracy in the table
    worst_acc: float = float("nan")  # worst feasible accuracy (regret when nothing feasible is found)
    ref: tuple = ()              # pareto reference point (-acc, ms)
    true_hv: float = float("nan")


def make_tasks(table, devices, kinds, percentiles) -> list[Task]:
    from nnmeter_nas.strategies.pareto import hypervolume_2d, pareto_mask

    cells, lat = table.latency_matrix(table.devices)
    acc = np.array([c.cifar10_acc for c in cells])
    col = {d: i for i, d in enumerate(table.devices)}
    tasks: list[Task] = []
    if "single" in kinds:
        for d in devices:
            for q in percentiles:
                b = float(np.percentile(lat[:, col[d]], q))
                ok = lat[:, col[d]] <= b
                tasks.append(Task(f"single/{d}/p{q}", "single", {d: b}, best_acc=float(acc[ok].max()),
                                  worst_acc=float(acc[ok].min())))
    if "all4" in kinds:
        for q in percentiles:
            budgets = {d: float(np.percentile(lat[:, col[d]], q)) for d in table.devices}
            ok = np.all([lat[:, col[d]] <= b for d, b in budgets.items()], axis=0)
            tasks.append(Task(f"all4/p{q}", "all4", budgets, best_acc=float(acc[ok].max()),
                              worst_acc=float(acc[ok].min())))
    if "pareto" in kinds:
        for d in devices:
            F = np.stack([-acc, lat[:, col[d]]], axis=1)
            ref = (float(-acc.min()), float(lat[:, col[d]].max()))
            true_hv = hypervolume_2d(F[pareto_mask(F)], ref)
            tasks.append(Task(f"pareto/{d}", "pareto", device=d, ref=ref, true_hv=true_hv))
    return tasks


ALL_STRATEGIES = NNI_BASELINES + OURS_CONSTRAINED + ("nsga2",)
DEFAULT_STRATEGIES = ("nni-random", "nni-evolution", "c-evolution", "c-evo-mnas", "nsga2")
_SELECTED = list(DEFAULT_STRATEGIES)


def strategies_for(task: Task) -> tuple[str, ...]:
    names = ("nni-random", "nni-evolution", "c-random", "nsga2") if task.kind == "pareto" else \
        NNI_BASELINES + OURS_CONSTRAINED
    return tuple(s for s in names if s in _SELECTED)


# ----------------------------------------------------------------------------- one run

_CTX: dict = {}


def _context():
    """Per-process objects: table, lookup, restricted space (built once)."""
    if not _CTX:
        import nni.runtime.log
        from nnmeter_nas.datasets import NB201Table
        from nnmeter_nas.search_spaces import NasBench201Space
        from nnmeter_nas.nni.tabular import NB201Lookup

        nni.runtime.log.silence_stdout()
        logging.getLogger("nni").setLevel(logging.WARNING)
        table = NB201Table.load()
        cells, _ = table.latency_matrix(table.devices)
        _CTX["table"] = table
        _CTX["lookup"] = NB201Lookup(table)
        _CTX["space"] = NasBench201Space(allowed_arch_strs=[c.arch_str for c in cells])
        _CTX["workdir"] = Path(tempfile.mkdtemp(prefix="nnmeter-nas-bench-"))
        _CTX["filter_kind"] = None
    return _CTX


def latency_filter(budgets: dict, lookup):
    """Our LatencyFilter (nnmeter_nas.nni.filter) if it is there and agrees with the table on a
    feasible and an infeasible cell; otherwise a minimal NNI Filter over the same lookup.
    The choice is made once per process. Returns (middleware, description)."""
    from nni.nas.strategy.middleware import Filter

    ctx = _context()
    if ctx["filter_kind"] is None:
        ctx["filter_kind"] = "local nni Filter"
        try:
            from nnmeter_nas.nni.filter import LatencyFilter  # written by the NNI-integration work
        except ImportError:
            LatencyFilter = None
        if LatencyFilter is not None:
            try:
                from nnmeter_nas.search_spaces.nasbench201 import arch_str_to_sample
                table, dev = ctx["table"], ctx["table"].devices[0]
                rows = table.measured(dev)
                cut = float(np.median(rows.latency_ms))
                probe = LatencyFilter({dev: cut}, predictor=lookup, devices=[dev])
                fast = arch_str_to_sample(rows.arch_strs[int(np.argmin(rows.latency_ms))])
                slow = arch_str_to_sample(rows.arch_strs[int(np.argmax(rows.latency_ms))])
                if probe(fast) and not probe(slow):
                    ctx["filter_kind"] = "nnmeter_nas.nni.filter.LatencyFilter"
                else:
                    print("note: LatencyFilter disagrees with the table on a probe; using a local NNI Filter",
                          file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - report and fall back
                print(f"note: LatencyFilter could not be used ({exc!r}); using a local NNI Filter", file=sys.stderr)
    if ctx["filter_kind"].startswith("nnmeter_nas"):
        from nnmeter_nas.nni.filter import LatencyFilter
        return LatencyFilter(dict(budgets), predictor=lookup, devices=list(budgets)), ctx["filter_kind"]

    def within(model) -> bool:
        lat = lookup(model.sample)
        return all(lat[d] <= b for d, b in budgets.items())

    return Filter(within, patience=1000), ctx["filter_kind"]


def build_strategy(name: str, task: Task, seed: int, lookup):
    from nni.nas.strategy import RegularizedEvolution, Random
    from nni.nas.strategy.middleware import Chain
    from nnmeter_nas.strategies import (ConstrainedEvolution, ConstrainedRandom, MnasNetReward,
                                        MultiObjectiveEvolution)

    budgets = task.budgets
    if name in NNI_BASELINES:
        base = Random(seed=seed) if name == "nni-random" else \
            RegularizedEvolution(population_size=20, sample_size=5, mutation_prob=1 / 6, seed=seed)
        if not budgets:
            return base, None
        flt, kind = latency_filter(budgets, lookup)
        return Chain(base, flt), kind
    if name == "c-random":
        return ConstrainedRandom(lookup, budgets or None, seed=seed,
                                 devices=[task.device] if task.device else ()), None
    if name == "c-evolution":
        return ConstrainedEvolution(lookup, budgets, population_size=20, sample_size=5, seed=seed), None
    if name == "c-evo-uniform":
        return ConstrainedEvolution(lookup, budgets, population_size=20, sample_size=5, seed=seed,
                                    budget_preference=0.0), None
    if name == "c-evo-mnas":
        return ConstrainedEvolution(lookup, budgets, population_size=20, sample_size=5, seed=seed,
                                    reward=MnasNetReward(-0.07, -0.07)), None
    if name == "nsga2":
        return MultiObjectiveEvolution(lookup, [task.device], population_size=20, seed=seed), None
    raise ValueError(name)


def run_one(job: tuple) -> dict:
    """Run one (task, strategy, seed); returns the per-budget scores."""
    task, name, seed, budgets_n = job
    from nnmeter_nas.strategies.pareto import hypervolume_2d
    from nnmeter_nas.nni.experiment import evaluated_models, run_sequential_experiment
    from nnmeter_nas.nni.tabular import TabularEvaluator

    ctx = _context()
    lookup = ctx["lookup"]
    strategy, filter_kind = build_strategy(name, task, seed, lookup)
    start = time.perf_counter()
    exp = run_sequential_experiment(ctx["space"], TabularEvaluator(lookup.accuracy), strategy,
                                    max_models=max(budgets_n), workdir=ctx["workdir"])
    seconds = time.perf_counter() - start
    models = evaluated_models(exp)
    acc = np.array([float(m.metric) for m in models])
    lats = [lookup(m.sample) for m in models]
    scores = {}
    for n in budgets_n:
        a, l = acc[:n], lats[:n]
        if task.kind == "pareto":
            F = np.array([[-x, y[task.device]] for x, y in zip(a, l)]).reshape(-1, 2)
            scores[n] = hypervolume_2d(F, task.ref) / task.true_hv
        else:
            ok = [all(y[d] <= b for d, b in task.budgets.items()) for y in l]
            found = a[np.array(ok, dtype=bool)] if len(a) else a
            scores[n] = task.best_acc - (found.max() if len(found) else task.worst_acc)
    infeasible_trained = 0 if task.kind == "pareto" else \
        sum(not all(y[d] <= b for d, b in task.budgets.items()) for y in lats)
    return {"task": task.name, "strategy": name, "seed": seed, "scores": scores, "evaluated": len(models),
            "infeasible_trained": infeasible_trained, "seconds": seconds, "filter": filter_kind}


# ----------------------------------------------------------------------------- report

def summarize(tasks, results, budgets_n) -> str:
    by = {}
    for r in results:
        by.setdefault((r["task"], r["strategy"]), []).append(r)
    lines = []
    for kind, title, better in (("single", "Regret (accuracy points, lower is better), one device", "lower"),
                                ("all4", "Regret under budgets on all four devices at once", "lower"),
                                ("pareto", "Normalized hypervolume (higher is better)", "higher")):
        ktasks = [t for t in tasks if t.kind == kind]
        if not ktasks:
            continue
        lines.append(f"\n### {title}\n")
        head = "| task | strategy | " + " | ".join(f"n={n} mean ± std" for n in budgets_n) + " | evaluated | s/run |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for t in ktasks:
            for s in strategies_for(t):
                rs = by.get((t.name, s), [])
                if not rs:
                    continue
                cells = []
                for n in budgets_n:
                    v = np.array([r["scores"][n] for r in rs])
                    cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
                ev = np.mean([r["evaluated"] for r in rs])
                sec = np.mean([r["seconds"] for r in rs])
                extra = sum(r["infeasible_trained"] for r in rs)
                name = s + (f" ({extra} over budget trained)" if extra else "")
                lines.append(f"| {t.name} | {name} | " + " | ".join(cells) + f" | {ev:.0f} | {sec:.2f} |")
    # targets
    lines.append("\n### Targets\n")
    big = [n for n in budgets_n if n >= 100] or list(budgets_n)
    wins = losses = ties = 0
    for t in tasks:
        if t.kind == "pareto":
            continue
        if not by.get((t.name, "c-evolution")):
            continue
        for n in big:
            ours = np.mean([r["scores"][n] for r in by.get((t.name, "c-evolution"), [])])
            for b in NNI_BASELINES:
                if not by.get((t.name, b)):
                    continue
                theirs = np.mean([r["scores"][n] for r in by.get((t.name, b), [])])
                if ours < theirs:
                    wins += 1
                elif ours == theirs:
                    ties += 1
                    lines.append(f"- c-evolution ties {b} on {t.name} at n={n}: both {ours:.3f}")
                else:
                    losses += 1
                    lines.append(f"- c-evolution NOT lower mean regret than {b} on {t.name} at n={n}: "
                                 f"{ours:.3f} vs {theirs:.3f}")
    if wins + losses + ties:
        lines.append(f"- c-evolution lower mean regret than the NNI baseline in {wins} of {wins + losses + ties} "
                     f"(task, baseline, n in {big}) comparisons, tied in {ties}, higher in {losses}")
    hv_w = hv_l = 0
    for t in tasks:
        if t.kind != "pareto" or not by.get((t.name, "nsga2")):
            continue
        for n in budgets_n:
            ours = np.mean([r["scores"][n] for r in by.get((t.name, "nsga2"), [])])
            for b in ("nni-random", "nni-evolution", "c-random"):
                if not by.get((t.name, b)):
                    continue
                theirs = np.mean([r["scores"][n] for r in by.get((t.name, b), [])])
                if ours > theirs:
                    hv_w += 1
                else:
                    hv_l += 1
                    lines.append(f"- nsga2 NOT higher mean hypervolume than {b} on {t.name} at n={n}: "
                                 f"{ours:.4f} vs {theirs:.4f}")
    if hv_w + hv_l:
        lines.append(f"- nsga2 higher mean hypervolume in {hv_w} of {hv_w + hv_l} comparisons")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="seeds per (task, strategy) (default 20)")
    p.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200],
                   help="numbers of evaluated architectures to report (default 50 100 200)")
    p.add_argument("--tasks", nargs="+", default=["single", "all4", "pareto"], choices=["single", "all4", "pareto"])
    p.add_argument("--devices", nargs="+", default=None, help="devices for single/pareto tasks (default: all four)")
    p.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=ALL_STRATEGIES,
                   help="strategies to run (default: %(default)s; c-random draws the same samples as "
                        "nni-random with the same seed, so it repeats its numbers)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--quick", action="store_true", help="3 seeds, budgets 20 50, first device only")
    p.add_argument("--json", type=Path, default=None, help="also write every run's scores here")
    p.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON",
                   help="run nothing: print the tables of results saved with --json (several files merge)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budgets = 3, [20, 50]
        args.devices = args.devices or ["cortexA76cpu_tflite21"]
    budgets_n = sorted(set(args.budgets))
    _SELECTED[:] = args.strategies

    # NNI writes under ~ in places that take no option: keep it in a temporary HOME.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="nnmeter-nas-bench-home-")
    from nnmeter_nas.datasets import NB201Table
    from tqdm import tqdm

    table = NB201Table.load()
    devices = args.devices or list(table.devices)
    tasks = make_tasks(table, devices, args.tasks, PERCENTILES)
    if args.summarize:
        results = []
        for path in args.summarize:
            for r in json.loads(path.read_text())["results"]:
                r["scores"] = {int(k): v for k, v in r["scores"].items()}
                results.append(r)
        _SELECTED[:] = sorted({r["strategy"] for r in results}, key=ALL_STRATEGIES.index)
        budgets_n = sorted({n for r in results for n in r["scores"]})
        seeds = sorted({r["seed"] for r in results})
        print(f"{len(results)} runs from {', '.join(map(str, args.summarize))}; seeds {seeds[0]}..{seeds[-1]}")
        print(summarize(tasks, results, budgets_n))
        return 0
    jobs = [(t, s, seed, tuple(budgets_n)) for t in tasks for s in strategies_for(t) for seed in range(args.seeds)]
    print(f"{len(tasks)} tasks, {len(jobs)} runs of up to {max(budgets_n)} evaluated architectures; "
          f"{len(table.measured_on_all())} measured cells", flush=True)
    for t in tasks:
        if t.kind != "pareto":
            print(f"  {t.name}: budgets {', '.join(f'{d} {b:.3f} ms' for d, b in t.budgets.items())}; "
                  f"best feasible accuracy {t.best_acc:.2f}%")
    start = time.perf_counter()
    results = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for r in tqdm(pool.map(run_one, jobs, chunksize=4), total=len(jobs), desc="runs"):
                results.append(r)
    else:
        for job in tqdm(jobs, desc="runs"):
            results.append(run_one(job))
    filters = sorted({r["filter"] for r in results if r["filter"]})
    print(f"\n{len(results)} runs in {time.perf_counter() - start:.0f} s; NNI baselines filtered by: "
          f"{', '.join(filters) or '-'}; seeds 0..{args.seeds - 1}")
    print(summarize(tasks, results, budgets_n))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
