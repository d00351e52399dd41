"""Accuracy of the built-in predictor against whole-network measurements on this machine.

Ground truth: every network is exported to ONNX (TorchScript exporter) and measured with the
same backend and settings the predictor was built with (onnxruntime CPU, 1 intra-op thread,
ORT_ENABLE_ALL, runs timed with the calling thread's CPU clock, median of interleaved
repeats). All networks are loaded together and visited ``--passes`` times, ``--pause`` seconds apart,
in a fresh random order each time (a few runs per visit); the truth is the median over the
visits. The speed of this shared machine drifts by tens of percent over seconds to minutes
(other processes, other tenants of the host); spreading the runs over several minutes
averages that out. The noise of the measurement itself is reported as the difference
between the truth from the first and from the second half of the passes.

Groups (none of these networks is in the builder's training data, which holds single
kernels only):

- ``spos``: random SPOS (ShuffleNetV2 one-shot) candidates at 224x224;
- ``nb201``: random NAS-Bench-201 cells (CIFAR network, 32x32);
- ``classic``: the project's model zoo at 224x224.

Per group: share of networks predicted within +-10% and +-5%, RMSPE, Kendall tau of the
ranking, median signed error (bias), and the same for the FLOPs-only baseline (a line
``a * FLOPs + b`` fitted to the builder's kernel measurements, stored in the package).

A package with a cache model (:mod:`nnmeter_nas.cache_model`: warm and cold kernel regressors
mixed by the network's weight size) is also scored without it, on the same measurements. The
``x<ratio>`` row scales every prediction by the reference network's time in this run over its
time while the kernels were timed: how much of the error is the shared machine's state.

Calibrated (``--calibrate N``, default 30): N more SPOS candidates and N more NB201 cells, drawn
with another seed and never one of the test networks, are measured in the same passes; a
per-space calibration (:mod:`nnmeter_nas.calibration`: a scale per main kernel type and a cost
per kernel, fitted on those networks only) is fitted and the test networks of that space are
scored with it too. ``--save-calibrations`` stores them in the package, for
``load_predictor(name, calibration="spos")``.

Generic (``--compose N``): N random networks composed of CNN blocks
(:mod:`nnmeter_nas.builder.compose`; none is a test network or in a search space) are measured
in the same passes and one calibration fitted on them is applied to every group: whether a
calibration that knows no search space helps.

    python benchmarks/accuracy.py                     # 100 SPOS, 50 NB201, all zoo models
    python benchmarks/accuracy.py --n-spos 10 --n-nb201 10 --classic resnet18,mobilenet_v2

Results are printed and written to benchmarks/results/accuracy_<predictor>.{json,md}. A
predictor's accuracy can only be measured on the host it was built on (same CPU model and
instruction set, same onnxruntime): the script refuses another host unless ``--other-host``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUILTIN = REPO / "nnmeter_nas" / "data" / "predictors"


def default_package() -> Path:
    """The built-in x86 predictor for this host's instruction set (see build_cpu_predictor)."""
    from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_isa

    return BUILTIN / f"x86{cpu_isa()}cpu_onnxruntime"


def spos_networks(n: int, seed: int, *, prefix: str = "spos", exclude=()):
    from nnmeter_nas.search_spaces.sampling import random_networks

    for i, (arch, make, shape) in enumerate(random_networks("spos", n, seed, exclude=exclude)):
        yield f"{prefix}-{i:03d}", make, shape, arch


def nb201_networks(n: int, seed: int, *, prefix: str = "nb201", exclude=()):
    from nnmeter_nas.search_spaces.sampling import random_networks

    for i, (arch, make, shape) in enumerate(random_networks("nb201", n, seed, exclude=exclude)):
        yield f"{prefix}-{i:03d}", make, shape, arch


def composed(n: int, seed: int):
    from nnmeter_nas.builder.compose import composed_networks

    for c in composed_networks(n, seed):
        yield c.name, (lambda c=c: c.module), c.input_shape, c.spec


def classic_networks(names: list[str] | None):
    from nnmeter_nas import zoo

    for name in names or list(zoo.ZOO):
        yield name, (lambda n=name: zoo.build(n)), (1, 3, 224, 224), name


def kendall_tau(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) > 1 else float("nan")


def figures(truth, pred) -> dict:
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    rel = (pred - truth) / truth
    return {"n": int(len(truth)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "kendall_tau": kendall_tau(truth, pred),
            "median_error": float(np.median(rel)), "max_abs_error": float(np.max(np.abs(rel))),
            # spread of the errors around their bias: what a per-space scale cannot remove
            "log_error_sd": float(np.std(np.log(pred / truth)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=None,
                    help="predictor package (default: the built-in x86 predictor for this "
                         "host's instruction set)")
    ap.add_argument("--n-spos", type=int, default=100)
    ap.add_argument("--n-nb201", type=int, default=50)
    ap.add_argument("--classic", default=None, help="comma-separated zoo names (default all)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--passes", type=int, default=30,
                    help="interleaved visits per network (median over them is the truth)")
    ap.add_argument("--pause", type=float, default=8.0,
                    help="seconds between passes, to spread the visits over minutes")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/results/accuracy_<predictor name>.json")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "accuracy_onnx",
                    help="exported ONNX models are kept here and reused")
    ap.add_argument("--calibrate", type=int, default=30, metavar="N",
                    help="also measure N other SPOS and N other NB201 networks (none of the "
                         "test networks) and report the test figures with a per-space "
                         "calibration fitted on them (nnmeter_nas.builder.calibrate); 0: off")
    ap.add_argument("--compose", type=int, default=0, metavar="N",
                    help="also measure N random composed networks "
                         "(nnmeter_nas.builder.compose) and report every group with a "
                         "'generic' calibration fitted on them (default 0: off)")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="PACKAGE",
                    help="also score this package (same host) on the same measurements, "
                         "uncalibrated; repeatable")
    ap.add_argument("--save-calibrations", action="store_true",
                    help="store the fitted calibrations in the package's manifest")
    ap.add_argument("--other-host", action="store_true",
                    help="measure even when this host differs from the predictor's build host "
                         "(CPU, instruction set, onnxruntime version): the figures then say how "
                         "far the predictor transfers, not how accurate it is")
    ap.add_argument("--export-only", action="store_true",
                    help="export (and cache) the networks, measure nothing")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from nnmeter_nas.builder.backends import backend_from_settings, host_mismatch
    from nnmeter_nas.builder.fitting import kernel_flops
    from nnmeter_nas.features import extract_features, regressor_name
    from nnmeter_nas.graph.onnx_import import onnx_to_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.kernels import detect_kernels
    from nnmeter_nas.predictor import LatencyPredictor

    if args.package is None:
        args.package = default_package()
    if not (args.package / "manifest.json").exists():
        print(f"error: no predictor package at {args.package}; build one for this host with "
              "benchmarks/build_cpu_predictor.py or pass --package", file=sys.stderr)
        return 2
    predictor = LatencyPredictor.from_path(args.package)
    man = predictor.package.manifest
    if args.out is None:
        args.out = REPO / "benchmarks" / "results" / f"accuracy_{predictor.name}.json"
    bsettings = man["source"]["backend"]
    backend = backend_from_settings(bsettings)  # threads, optimisation level and clock
    mismatch = host_mismatch(bsettings, backend.settings)
    if mismatch:
        what = ", ".join(f"{k}: built on {a!r}, here {b!r}" for k, (a, b) in mismatch.items())
        if not args.other_host and not args.export_only:
            print(f"error: {args.package.name} was built on another host ({what}); its "
                  "accuracy can only be measured there. Build a predictor here with "
                  "benchmarks/build_cpu_predictor.py, or pass --other-host to measure how far "
                  "it transfers.", file=sys.stderr)
            return 2
        print(f"warning: other host than the build's ({what})", flush=True)
    base = man["source"]["flops_baseline"]
    print(f"predictor {predictor.name} {predictor.version}: {len(predictor.kernel_types)} "
          f"kernel regressors; backend {backend.name} threads={backend.threads} "
          f"clock={backend.plan.clock}")
    if predictor.package.cache_model is not None:
        from nnmeter_nas.builder.cache_fit import cache_model_summary

        print(f"cache model: {cache_model_summary(predictor.package.cache_model)}")

    groups = {"spos": list(spos_networks(args.n_spos, args.seed)),
              "nb201": list(nb201_networks(args.n_nb201, args.seed)),
              "classic": list(classic_networks(args.classic.split(",") if args.classic
                                               else None))}
    test_groups = [g for g, nets in groups.items() if nets]
    # Calibration networks: other seeds, and never one of the test networks.
    calibrated = {"spos": "spos-cal", "nb201": "nb201-cal"}
    if args.calibrate > 0:
        groups["spos-cal"] = list(spos_networks(
            args.calibrate, args.seed + 1, prefix="spos-cal",
            exclude=[a for _, _, _, a in groups["spos"]]))
        groups["nb201-cal"] = list(nb201_networks(
            args.calibrate, args.seed + 1, prefix="nb201-cal",
            exclude={a for _, _, _, a in groups["nb201"]}))
    if args.compose > 0:
        groups["composed"] = list(composed(args.compose, args.seed))
    breakdowns: dict[str, object] = {}
    from nnmeter_nas.builder.measure import reference_model, reference_state_ms
    from nnmeter_nas.builder.network_timing import measure_interleaved

    reference = reference_model()
    ref_visits: list[float] = []
    loads: list[float] = []
    rows = []
    t0 = time.time()
    items = []
    for group, nets in groups.items():
        if not nets:
            continue
        print(f"[{group}] exporting and predicting {len(nets)} networks ...", flush=True)
        for name, make, shape, arch in nets:
            cached = args.cache / f"{name}.onnx"
            meta = args.cache / f"{name}.json"
            if cached.exists() and meta.exists() and \
                    json.loads(meta.read_text()).get("arch") == arch:
                import onnx

                proto = onnx.load(str(cached))
            else:
                proto = export_onnx(make(), shape)
                args.cache.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(proto.SerializeToString())
                meta.write_text(json.dumps({"arch": arch, "input_shape": list(shape)}))
            if args.export_only:
                continue
            kernels = detect_kernels(onnx_to_graph(proto), predictor.package.fusion_rules)
            flops = sum(kernel_flops(regressor_name(k.type),
                                     extract_features(k, predictor.package.feature_set) or [0] * 8)
                        for k in kernels)
            bd = predictor.predict_kernels(proto)
            breakdowns[name] = bd
            items.append({"group": group, "name": name, "arch": arch,
                          "model": proto.SerializeToString(), "pred_ms": bd.latency_ms,
                          "missing": bd.missing_kernel_types, "flops": float(flops),
                          "in_domain": bd.in_domain, "n_kernels": len(bd),
                          "by_regressor": bd.by_regressor()})
    if args.export_only:
        print(f"exported in {time.time() - t0:.0f} s")
        return 0
    print(f"measuring {len(items)} networks, {args.passes} interleaved passes "
          f"{args.pause:g} s apart ({time.time() - t0:.0f} s so far) ...", flush=True)
    # the machine's state, timed as the build timed it (warm), before and after the passes
    state_refs = [reference_state_ms(backend, model=reference)]
    visits = measure_interleaved(backend, [it["model"] for it in items] + [reference],
                                 args.passes, seed=args.seed, loads=loads, pause_s=args.pause)
    ref_visits.extend(visits.pop())
    state_refs.append(reference_state_ms(backend, model=reference))
    half = args.passes // 2
    for it, v in zip(items, visits):
        v = np.asarray(v)
        it["truth_ms"] = float(np.median(v))
        it["visit_ms"] = [round(float(x), 5) for x in v]
        # early half of the passes vs late half: includes the slow drift of the machine
        it["half_diff"] = float(abs(np.median(v[:half]) - np.median(v[half:])) /
                                it["truth_ms"])
        it["visit_cv"] = float(np.std(v) / np.mean(v))
        it["flops_pred_ms"] = base["ms_per_flop"] * it["flops"] + base["intercept_ms"]
        del it["model"]
        rows.append(it)
    print(f"done in {time.time() - t0:.0f} s\n")
    others = {}
    for path in args.also:
        other = LatencyPredictor.from_path(path)
        label = f"{other.name} ({other.package.feature_set}, {path})"
        others[label] = {r["name"]: other.predict(args.cache / f"{r['name']}.onnx") for r in rows}
    state = man["source"].get("machine_state") or {}
    build_ref = (state.get("reference_ms") or {}).get("median")
    bench_ref = float(np.median(state_refs))
    if build_ref and bench_ref:
        # how much of the error is the machine's state: the predictions scaled by how much
        # slower (or faster) the reference network runs now than while the kernels were timed
        ratio = bench_ref / build_ref
        others[f"{predictor.name} (x{ratio:.3f}, the reference network's time now / at "
               f"build)"] = {r["name"]: r["pred_ms"] * ratio for r in rows}
    if predictor.package.cache_model is not None:
        # the same package without its cache model: what mixing in the cold regime changes
        warm_only = LatencyPredictor(predictor.package, cache_model=False)
        others[f"{predictor.name} (warm kernels only, without the cache model)"] = {
            r["name"]: warm_only.predict(args.cache / f"{r['name']}.onnx") for r in rows}

    from nnmeter_nas.builder.calibrate import fit_calibration, save_calibration

    calibrations = {}
    for space, cal_group in calibrated.items():
        cal_rows = [r for r in rows if r["group"] == cal_group]
        if not cal_rows:
            continue
        cal = fit_calibration([breakdowns[r["name"]] for r in cal_rows],
                              [r["truth_ms"] for r in cal_rows], space=space)
        calibrations[space] = cal
        for r in rows:
            if r["group"] == space:
                bd = breakdowns[r["name"]]
                r["calibrated_pred_ms"] = cal.latency_ms(bd, bd.overhead_ms)
        if args.save_calibrations:
            save_calibration(args.package, space, cal)
            print(f"saved the {space!r} calibration into {args.package}")
    generic = None
    comp_rows = [r for r in rows if r["group"] == "composed"]
    if comp_rows:
        generic = fit_calibration([breakdowns[r["name"]] for r in comp_rows],
                                  [r["truth_ms"] for r in comp_rows], space="generic")
        for r in rows:
            bd = breakdowns[r["name"]]
            r["generic_pred_ms"] = generic.latency_ms(bd, bd.overhead_ms)

    summary = {}
    hdr = (f"{'group':8s} {'n':>4s} | {'<=10%':>6s} {'<=5%':>6s} {'RMSPE':>7s} {'tau':>6s} "
           f"{'bias':>7s} | FLOPs: {'<=10%':>6s} {'<=5%':>6s} {'RMSPE':>7s} {'tau':>6s} | "
           f"noise: {'med':>6s} {'p90':>6s}")
    print(hdr)
    for group in test_groups:
        rs = [r for r in rows if r["group"] == group]
        if not rs:
            continue
        truth = [r["truth_ms"] for r in rs]
        f_pred = figures(truth, [r["pred_ms"] for r in rs])
        f_base = figures(truth, [r["flops_pred_ms"] for r in rs])
        noise = [r["half_diff"] for r in rs]
        summary[group] = {"predictor": f_pred, "flops_baseline": f_base,
                          "measurement_noise": {
                              "median_half_difference": float(np.median(noise)),
                              "p90_half_difference": float(np.percentile(noise, 90)),
                              "median_visit_cv": float(np.median(
                                  [r["visit_cv"] for r in rs]))},
                          "truth_ms_range": [float(min(truth)), float(max(truth))],
                          "missing_kernel_types": sorted({t for r in rs for t in r["missing"]})}
        print(f"{group:8s} {len(rs):4d} | {f_pred['within_10pct']:6.1%} "
              f"{f_pred['within_5pct']:6.1%} {f_pred['rmspe']:7.2%} "
              f"{f_pred['kendall_tau']:6.3f} {f_pred['median_error']:+7.2%} |        "
              f"{f_base['within_10pct']:6.1%} {f_base['within_5pct']:6.1%} "
              f"{f_base['rmspe']:7.2%} {f_base['kendall_tau']:6.3f} |        "
              f"{np.median(noise):6.2%} {np.percentile(noise, 90):6.2%}")
        if generic is not None:
            f_gen = figures(truth, [r["generic_pred_ms"] for r in rs])
            summary[group]["generic"] = f_gen
            summary[group]["generic_calibration"] = generic.to_dict()
            print(f"{'  +gen':8s} {len(rs):4d} | {f_gen['within_10pct']:6.1%} "
                  f"{f_gen['within_5pct']:6.1%} {f_gen['rmspe']:7.2%} "
                  f"{f_gen['kendall_tau']:6.3f} {f_gen['median_error']:+7.2%} |   generic "
                  f"calibration ({generic.info['networks']} composed networks)")
        for label, preds in others.items():
            f_o = figures(truth, [preds[r["name"]] for r in rs])
            summary[group].setdefault("also", {})[label] = f_o
            print(f"{'  =also':8s} {len(rs):4d} | {f_o['within_10pct']:6.1%} "
                  f"{f_o['within_5pct']:6.1%} {f_o['rmspe']:7.2%} "
                  f"{f_o['kendall_tau']:6.3f} {f_o['median_error']:+7.2%} |   {label}")
        if group in calibrations:
            f_cal = figures(truth, [r["calibrated_pred_ms"] for r in rs])
            cal = calibrations[group]
            summary[group]["calibrated"] = f_cal
            summary[group]["calibration"] = cal.to_dict()
            print(f"{'  +cal':8s} {len(rs):4d} | {f_cal['within_10pct']:6.1%} "
                  f"{f_cal['within_5pct']:6.1%} {f_cal['rmspe']:7.2%} "
                  f"{f_cal['kendall_tau']:6.3f} {f_cal['median_error']:+7.2%} |   calibrated "
                  f"on {cal.info['networks']} other {group} networks: per-kernel "
                  f"{cal.per_kernel_ms * 1e3:+.2f} us, scales "
                  + ", ".join(f"{k} {v:.2f}" for k, v in cal.scales.items())
                  + f", others {cal.default_scale:.2f}")
    print("\nspread of the errors around their bias (sd of log(predicted / measured)):")
    for group, sm in summary.items():
        parts = [f"{predictor.name} {sm['predictor']['log_error_sd']:.3f}"]
        parts += [f"{label.split(' ')[0]} ({label.split('(')[1].split(',')[0]}) "
                  f"{f['log_error_sd']:.3f}" for label, f in sm.get("also", {}).items()]
        print(f"  {group}: " + ", ".join(parts))
    print(f"\nnoise: |truth from the first {half} passes - truth from the last "
          f"{args.passes - half}| / truth (median, 90th percentile over the group); reference "
          f"workload visited between the networks: min {min(ref_visits):.3f} ms, median "
          f"{np.median(ref_visits):.3f} ms, max {max(ref_visits):.3f} ms (its caches evicted by "
          f"the network before it); timed warm as the build times it: "
          + ", ".join(f"{r:.3f}" for r in state_refs) + " ms (before, after the passes)")
    for group in test_groups:
        rs = [r for r in rows if r["group"] == group]
        if rs:
            share: dict[str, float] = {}
            for r in rs:
                for reg, ms in r["by_regressor"].items():
                    share[reg] = share.get(reg, 0.0) + ms / r["pred_ms"] / len(rs)
            top = sorted(share.items(), key=lambda kv: -kv[1])[:6]
            print(f"  {group}: predicted time by regressor: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in top))
    build_load = (state.get("loadavg_1min") or {}).get("median")
    bench_load = float(np.median(loads)) if loads else None
    machine = {"build_reference_ms": build_ref, "benchmark_reference_ms": bench_ref,
               "benchmark_reference_visits_median_ms": float(np.median(ref_visits)),
               "build_loadavg": build_load, "benchmark_loadavg": bench_load}
    if build_ref and bench_ref:
        print(f"\nmachine state: reference workload {build_ref:.3f} ms while building, "
              f"{bench_ref:.3f} ms now (ratio {bench_ref / build_ref:.2f}); load average "
              f"{build_load:.1f} while building, {bench_load:.1f} now")
    print("\nper network (classic):")
    for r in rows:
        if r["group"] == "classic":
            print(f"  {r['name']:20s} truth {r['truth_ms']:8.2f} ms  pred {r['pred_ms']:8.2f} "
                  f"({(r['pred_ms'] - r['truth_ms']) / r['truth_ms']:+6.1%})  FLOPs-line "
                  f"{r['flops_pred_ms']:8.2f}  visit CV {r['visit_cv']:.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"package": str(args.package.relative_to(REPO))
                                    if args.package.is_relative_to(REPO) else str(args.package),
                                    "predictor_version": predictor.version,
                                    "backend": backend.describe(),
                                    "host_differs_from_build": {k: list(v) for k, v
                                                                in mismatch.items()},
                                    "summary": summary,
                                    "machine_state": machine,
                                    "networks": rows}, indent=1, default=str))
    md = ["| group | n | within 10% | within 5% | RMSPE | Kendall tau | median error | "
          "FLOPs: within 10% | within 5% | RMSPE | Kendall tau | noise: half-vs-half (median / p90) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g, sm in summary.items():
        a, b, nz = sm["predictor"], sm["flops_baseline"], sm["measurement_noise"]
        md.append(f"| {g} | {a['n']} | {a['within_10pct']:.0%} | {a['within_5pct']:.0%} | "
                  f"{a['rmspe']:.1%} | {a['kendall_tau']:.3f} | {a['median_error']:+.1%} | "
                  f"{b['within_10pct']:.0%} | {b['within_5pct']:.0%} | {b['rmspe']:.1%} | "
                  f"{b['kendall_tau']:.3f} | {nz['median_half_difference']:.1%} / "
                  f"{nz['p90_half_difference']:.1%} |")
        if "generic" in sm:
            c = sm["generic"]
            n_gen = sm["generic_calibration"]["info"]["networks"]
            md.append(f"| {g}, generic calibration ({n_gen} composed networks) | {c['n']} | "
                      f"{c['within_10pct']:.0%} | {c['within_5pct']:.0%} | {c['rmspe']:.1%} | "
                      f"{c['kendall_tau']:.3f} | {c['median_error']:+.1%} | | | | | |")
        for label, c in sm.get("also", {}).items():
            md.append(f"| {g}, {label}, same measurements | {c['n']} | "
                      f"{c['within_10pct']:.0%} | {c['within_5pct']:.0%} | {c['rmspe']:.1%} | "
                      f"{c['kendall_tau']:.3f} | {c['median_error']:+.1%} | | | | | |")
        if "calibrated" in sm:
            c, n_cal = sm["calibrated"], sm["calibration"]["info"]["networks"]
            md.append(f"| {g}, calibrated on {n_cal} other {g} networks | {c['n']} | "
                      f"{c['within_10pct']:.0%} | {c['within_5pct']:.0%} | {c['rmspe']:.1%} | "
                      f"{c['kendall_tau']:.3f} | {c['median_error']:+.1%} | | | | | |")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))
    print(f"\nwritten {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
