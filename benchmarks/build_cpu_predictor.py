"""Build the built-in x86 CPU predictor for this machine's instruction set.

The package is named after the host's widest SIMD set (``x86avx2cpu_onnxruntime``,
``x86avx512cpu_onnxruntime``): kernels run on different code paths, and a predictor built on
one over-predicts the other by 2x and more.

onnxruntime CPU execution provider, 1 intra-op thread, ``ORT_ENABLE_ALL``; fusion rules
measured; ~4000 prior kernel configurations plus two adaptive rounds; at most
``--time-budget`` minutes of measuring (then what was measured is fitted). Resumable: run it
again with the same ``--work-dir`` after an interruption.

    python benchmarks/build_cpu_predictor.py                 # writes nnmeter_nas/data/predictors/
    python benchmarks/build_cpu_predictor.py --samples 200   # a quick, rough one
    python benchmarks/build_cpu_predictor.py --cold-regime-mb 0   # warm kernels only

By default the kernels are built twice, warm and with 16 MiB flushed before every run, and
the cache model that mixes the two by a network's weight size is fitted on 160 random
networks measured whole (:mod:`nnmeter_nas.cache_model`).

Prints the cross-validated error of every kernel regressor and the package size.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nnmeter_nas.builder import BuildConfig, build_predictor, reuse_measurements  # noqa: E402
from nnmeter_nas.builder.cache_fit import build_two_regimes, cache_model_summary  # noqa: E402
from nnmeter_nas.builder.backends import TimingPlan  # noqa: E402
from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_name, cpu_isa  # noqa: E402

ISA = cpu_isa()
NAME = f"x86{ISA}cpu_onnxruntime"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=REPO / "nnmeter_nas" / "data" / "predictors"
                    / NAME)
    ap.add_argument("--work-dir", type=Path, default=REPO / "runs" / f"{NAME}-build")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--adaptive-rounds", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=45.0, help="minutes of measuring")
    ap.add_argument("--fusion-rules", type=Path, default=None,
                    help="fusion_rules.json to use instead of measuring the rules (for instance "
                         "an earlier build's, from its package)")
    ap.add_argument("--flush-mb", type=float, default=BuildConfig.flush_mb,
                    help="MiB written before every timed run of a kernel, so that it finds the "
                         "caches as a network leaves them (default %(default)s; 0: warm)")
    ap.add_argument("--cold-flush-mb", type=float, default=BuildConfig.cold_flush_mb,
                    help="the same for the classifier, whose weights a network reads once "
                         "(default %(default)s)")
    ap.add_argument("--cold-regime-mb", type=float, default=16.0,
                    help="MiB flushed before every run of the cold-regime build (default "
                         "%(default)s); 0: build the warm regime only, without a cache model")
    ap.add_argument("--networks", type=int, default=160,
                    help="random networks measured to fit the cache model")
    ap.add_argument("--reuse-cold", type=Path, default=None, metavar="OLD_WORK_DIR",
                    help="start the cold regime from an earlier cold build's measurements")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--refit", action="store_true",
                    help="measure no kernel: fit both regimes from the stores in --work-dir as "
                         "they are, then measure the join's networks and write the package")
    ap.add_argument("--reuse", type=Path, default=None, metavar="OLD_WORK_DIR",
                    help="start from an earlier build's measurements, features recomputed "
                         "(nnmeter_nas.builder.reuse_measurements)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = BuildConfig(
        name=NAME, work_dir=args.work_dir, output=args.output, version="1.0",
        device=NAME,  # the key of tables and score columns: short, like nn-Meter's names
        description=f"x86-64 CPU ({ISA.upper()}), onnxruntime CPUExecutionProvider, 1 thread. "
                    f"Built-in predictor: onnxruntime on one x86-64 CPU core with {ISA.upper()} "
                    "(intra_op_num_threads=1, ORT_ENABLE_ALL), built by "
                    f"benchmarks/build_cpu_predictor.py on a 2-core {cpu_name()} VM.",
        backend="onnxruntime-cpu", backend_options={"threads": 1, "optimization": "all"},
        n_prior=args.samples, adaptive_rounds=args.adaptive_rounds, adaptive_fraction=0.2,
        # 32 configurations per batch, 12 interleaved rounds: the rounds of one configuration
        # are spread over a longer window, so a burst of load from other processes moves
        # them less.
        plan=TimingPlan(warmup=3, rounds=12, runs_per_round=2, round_target_ms=10.0,
                        max_runs_per_round=40, clock="thread"), batch=32,
        time_budget_s=60.0 * args.time_budget, progress=not args.no_progress,
        fusion_rules=args.fusion_rules, flush_mb=args.flush_mb,
        cold_flush_mb=args.cold_flush_mb)
    if args.reuse is not None:
        kept = reuse_measurements(args.reuse, cfg)
        print(f"reused {kept} measurements of {args.reuse}")
    if args.cold_regime_mb > 0:
        cold_cfg = replace(cfg, work_dir=cfg.work_dir / "cold", flush_mb=args.cold_regime_mb)
        if args.reuse_cold is not None:
            kept = reuse_measurements(args.reuse_cold, cold_cfg)
            print(f"reused {kept} measurements of {args.reuse_cold} (cold regime)")
        path, model = build_two_regimes(cfg, cold_flush_mb=args.cold_regime_mb,
                                        networks=args.networks, refit=args.refit)
        print(f"cache model: {cache_model_summary(model)}")
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
        print(f"package: {path} ({size / 1e6:.2f} MB)")
        return 0
    result = build_predictor(cfg, refit=args.refit)
    print(f"{'regressor':16s} {'model':8s} {'n':>5s} {'cv RMSPE':>9s} {'cv <=10%':>9s}")
    for reg, f in sorted(result.fits.items()):
        v = f.validation
        print(f"{reg:16s} {f.model:8s} {f.n_train:5d} {v['rmspe']:9.3f} "
              f"{v['within_10pct']:9.3f}")
    size = sum(p.stat().st_size for p in Path(result.package).rglob("*") if p.is_file())
    print(f"measurements: {result.n_measurements} (failed configurations: "
          f"{result.n_failures}), {result.seconds / 60:.1f} min")
    print(f"package: {result.package} ({size / 1e6:.2f} MB)")
    print("FLOPs baseline:", json.dumps(result.flops_baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
