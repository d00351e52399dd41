"""``nnmeter-nas predictors build``: argument parsing and the command's entry point.

The main CLI wires it in with::

    from nnmeter_nas.builder.cli import add_build_parser, run_build
    add_build_parser(predictors_subparsers, parents=[common_options])  # adds "build"
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence


def add_build_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()
                     ) -> argparse.ArgumentParser:
    """Add the ``build`` sub-command to ``subparsers`` (an ``argparse`` sub-parsers action) and
    return its parser (its ``func`` default is :func:`run_build`).

    Parameters
    ----------
    subparsers : argparse sub-parsers action
        Where to add ``build`` (``nnmeter-nas predictors``'s actions).
    parents : sequence of argparse.ArgumentParser, default=()
        Parsers whose options ``build`` takes as well (the CLI's common options, ``--debug``).
    """
    p = subparsers.add_parser(
        "build", parents=list(parents),
        help="measure kernels on this device and build a predictor package",
        description="Build a latency predictor for the device this runs on: detect fusion "
                    "rules, measure sampled kernel configurations (resumable: measurements "
                    "are appended to WORK_DIR/measurements.jsonl), fit one regressor per "
                    "kernel type and write a package.")
    p.add_argument("name", help="predictor name, e.g. x86avx2cpu_onnxruntime")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="package directory to write (default: install into the user cache "
                        "so load_predictor(NAME) finds it)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where measurements are kept; rerun with the same directory to "
                        "resume (default: ./NAME-build)")
    p.add_argument("--backend", default="onnxruntime-cpu",
                   help="measurement backend (default: onnxruntime-cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of the backend (default 1)")
    p.add_argument("--optimization", default="all", choices=["disable", "basic", "extended",
                                                             "all"],
                   help="onnxruntime graph optimisation level (default: all)")
    p.add_argument("--samples", type=int, default=3000,
                   help="prior kernel configurations in all (split over kernel types)")
    p.add_argument("--adaptive-rounds", type=int, default=2)
    p.add_argument("--adaptive-fraction", type=float, default=0.15,
                   help="extra configurations per adaptive round, as a fraction of a kernel "
                        "type's prior count")
    p.add_argument("--kernels", default=None,
                   help="comma-separated kernel specs to build (default: all); see "
                        "--list-kernels")
    p.add_argument("--list-kernels", action="store_true", help="list kernel specs and exit")
    p.add_argument("--fusion-rules", type=Path, default=None,
                   help="use this fusion_rules.json instead of measuring the rules")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop measuring after this many minutes and fit what was measured")
    p.add_argument("--repeats", type=int, default=6,
                   help="interleaved timing rounds per configuration (default 6)")
    p.add_argument("--batch", type=int, default=32,
                   help="configurations timed together, their rounds interleaved (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", dest="pkg_version", default="1.0")
    p.add_argument("--device", default="",
                   help="device name for the manifest (default: the predictor's name); lookup "
                        "tables and score columns are keyed by it, so keep it short; describe "
                        "the device with --description")
    p.add_argument("--description", default="")
    p.add_argument("--cache-regimes", action="store_true",
                   help="build twice, with warm caches and with --cold-flush-mb MiB flushed "
                        "before every kernel run, and fit how networks mix the two by their "
                        "weight size on --networks random networks measured whole "
                        "(nnmeter_nas.cache_model; about twice the build time). Needed on "
                        "CPUs, where a kernel inside a large network finds its weights "
                        "evicted from the caches")
    p.add_argument("--cold-flush-mb", type=float, default=16.0,
                   help="MiB flushed for the cold regime (default 16: above L2, within L3)")
    p.add_argument("--networks", type=int, default=160,
                   help="random networks measured to fit the cache model (default 160)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_build)
    return p


def run_build(args: argparse.Namespace) -> int:
    """Run ``nnmeter-nas predictors build`` with parsed ``args``; returns the exit status."""
    from .backends import TimingPlan
    from .build import BuildConfig, build_predictor
    from .kernel_specs import default_specs

    if args.list_kernels:
        for name, spec in default_specs().items():
            print(f"{name:16s} {spec.doc}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = args.output
    if output is None:
        from ..packages.registry import installed_dir

        output = installed_dir() / args.name
    from ..packages.format import check_replaceable

    check_replaceable(output)  # before hours of measuring, not when the package is written
    work_dir = args.work_dir or Path(f"{args.name}-build")
    plan = TimingPlan(warmup=3, rounds=args.repeats, runs_per_round=2, round_target_ms=10.0,
                      max_runs_per_round=40, clock="thread" if args.threads == 1 else "wall")
    cfg = BuildConfig(
        name=args.name, work_dir=work_dir, output=output, version=args.pkg_version,
        device=args.device, description=args.description, backend=args.backend,
        backend_options={"threads": args.threads, "optimization": args.optimization},
        specs=args.kernels.split(",") if args.kernels else None, n_prior=args.samples,
        adaptive_rounds=args.adaptive_rounds, adaptive_fraction=args.adaptive_fraction,
        seed=args.seed, fusion_rules=args.fusion_rules, plan=plan, batch=args.batch,
        time_budget_s=None if args.time_budget is None else 60.0 * args.time_budget,
        progress=not args.no_progress)
    if args.cache_regimes:
        from .cache_fit import build_two_regimes, cache_model_summary

        path, model = build_two_regimes(cfg, cold_flush_mb=args.cold_flush_mb,
                                        networks=args.networks)
        print(f"cache model: {cache_model_summary(model)}; package: {path}", file=sys.stderr)
        return 0
    result = build_predictor(cfg)
    summary = {reg: {"model": f.model, "n_train": f.n_train,
                     "cv_rmspe": round(f.validation["rmspe"], 4),
                     "cv_within_10pct": round(f.validation["within_10pct"], 3)}
               for reg, f in sorted(result.fits.items())}
    print(json.dumps(summary, indent=1))
    print(f"{result.n_measurements} measurements ({result.n_failures} failed configurations) "
          f"in {result.seconds / 60:.1f} min; package: {result.package}", file=sys.stderr)
    return 0 if result.package is not None else 1
