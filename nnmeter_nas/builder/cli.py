"""``nnmeter-nas predictors build``: argument parsing and the command's entry point.

The main CLI wires it in with::

    from nnmeter_nas.builder.cli import add_build_parser, run_build
    add_build_parser(predictors_subparsers, parents=[common_options])  # adds "build"
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .cache_fit import MIN_CACHE_NETWORKS


def _at_least(least: float, kind: type = int, *, above: bool = False
              ) -> Callable[[str], Any]:
    """An argparse ``type``: a ``kind`` (int or float) of at least ``least`` (above it with
    ``above=True``); argparse names the option in its error."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and value == value and value != float("inf") and (
            value > least if above else value >= least)
        if not ok:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(
                f"expected {what} {'above' if above else 'of at least'} {least:g}, not {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse's "invalid <name> value" wording
    return parse


def _spec_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated kernel spec names (see "
                                         f"--list-kernels), not {text!r}")
    return list(dict.fromkeys(names))


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
    p.add_argument("name", nargs="?", help="predictor name, e.g. x86avx2cpu_onnxruntime")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="package directory to write (default: install into the user cache "
                        "so load_predictor(NAME) finds it)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where measurements are kept; rerun with the same directory to "
                        "resume (default: ./NAME-build)")
    p.add_argument("--backend", default="onnxruntime-cpu",
                   help="measurement backend (default: onnxruntime-cpu)")
    p.add_argument("--threads", type=_at_least(1), default=1,
                   help="intra-op threads of the backend (default 1)")
    p.add_argument("--optimization", default="all", choices=["disable", "basic", "extended",
                                                             "all"],
                   help="onnxruntime graph optimisation level (default: all)")
    p.add_argument("--samples", type=_at_least(1), default=3000,
                   help="prior kernel configurations in all (split over kernel types)")
    p.add_argument("--adaptive-rounds", type=_at_least(0), default=2)
    p.add_argument("--adaptive-fraction", type=_at_least(0, float), default=0.15,
                   help="extra configurations per adaptive round, as a fraction of a kernel "
                        "type's prior count")
    p.add_argument("--kernels", type=_spec_list, default=None,
                   help="comma-separated kernel specs to build (default: all); see "
                        "--list-kernels")
    p.add_argument("--list-kernels", action="store_true", help="list kernel specs and exit")
    p.add_argument("--fusion-rules", type=Path, default=None,
                   help="use this fusion_rules.json instead of measuring the rules")
    p.add_argument("--time-budget", type=_at_least(0, float, above=True), default=None,
                   metavar="MINUTES",
                   help="stop measuring after this many minutes and fit what was measured")
    p.add_argument("--repeats", type=_at_least(1), default=6,
                   help="interleaved timing rounds per configuration (default 6)")
    p.add_argument("--batch", type=_at_least(1), default=32,
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
    p.add_argument("--cold-flush-mb", type=_at_least(0, float, above=True), default=16.0,
                   help="MiB flushed for the cold regime (default 16: above L2, within L3)")
    p.add_argument("--networks", type=_at_least(MIN_CACHE_NETWORKS), default=160,
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
    from ..errors import BuildConfigError
    from ..packages.format import check_replaceable, check_writable
    from ..packages.registry import check_package_name

    if not args.name:
        raise BuildConfigError("give the predictor's name, e.g. `nnmeter-nas predictors build "
                               "mycpu_onnxruntime` (it names the package and its folder)")
    check_package_name(args.name)
    if args.kernels:
        from .build import check_spec_names

        check_spec_names(args.kernels, default_specs())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = args.output
    if output is None:
        from ..packages.registry import writable_installed_dir

        output = writable_installed_dir() / args.name
    # before hours of measuring, not when the package is written
    check_replaceable(output)
    check_writable(output)
    work_dir = args.work_dir or Path(f"{args.name}-build")
    plan = TimingPlan(warmup=3, rounds=args.repeats, runs_per_round=2, round_target_ms=10.0,
                      max_runs_per_round=40, clock="thread" if args.threads == 1 else "wall")
    cfg = BuildConfig(
        name=args.name, work_dir=work_dir, output=output, version=args.pkg_version,
        device=args.device, description=args.description, backend=args.backend,
        backend_options={"threads": args.threads, "optimization": args.optimization},
        specs=args.kernels, n_prior=args.samples,
        adaptive_rounds=args.adaptive_rounds, adaptive_fraction=args.adaptive_fraction,
        seed=args.seed, fusion_rules=args.fusion_rules, plan=plan, batch=args.batch,
        time_budget_s=None if args.time_budget is None else 60.0 * args.time_budget,
        progress=not args.no_progress)
    with _interrupts_keep_measurements(work_dir):
        if args.cache_regimes:
            from .cache_fit import build_two_regimes, cache_model_summary

            path, model = build_two_regimes(cfg, cold_flush_mb=args.cold_flush_mb,
                                            networks=args.networks)
            print(f"cache model: {cache_model_summary(model)}; package: {path}",
                  file=sys.stderr)
            return 0
        result = build_predictor(cfg)
    summary = {reg: {"model": f.model, "n_train": f.n_train,
                     "cv_rmspe": round(f.validation["rmspe"], 4),
                     "cv_within_10pct": round(f.validation["within_10pct"], 3)}
               for reg, f in sorted(result.fits.items())}
    print(json.dumps(summary, indent=1))
    print(f"{result.n_measurements} measurements ({result.n_failures} failed configurations) "
          f"in {result.seconds / 60:.1f} min; package: {result.package}", file=sys.stderr)
    if result.package is None:
        print("nnmeter-nas: error: no package written: no kernel type has the 4 measurements a "
              f"regressor needs (the measurements are kept under {work_dir}); run the same "
              "command again, with a longer --time-budget if one stopped it, to measure more",
              file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _interrupts_keep_measurements(work_dir: Path) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM stop the build as an exception, so that a package being
    written is cleaned up and progress bars are closed, and say where the measurements are
    and how to resume. SIGTERM then exits with status 143 (128 + 15), as it would unhandled."""
    import signal
    import threading

    terminated = []

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        yield
    except KeyboardInterrupt:
        print(f"build stopped: the measurements taken so far are kept under "
              f"{work_dir}; run the same command again to resume "
              "(nothing is measured twice)", file=sys.stderr)
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
