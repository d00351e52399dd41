"""Fit and check the built-in packages of nn-Meter's four devices on every measurement that
applies (NAS-Bench-201, nn-Meter's reference networks, Pixel 4 networks).

    python benchmarks/four_devices.py                 # fit, evaluate, write the four packages
    python benchmarks/four_devices.py --no-write      # evaluate only (packages untouched)
    python benchmarks/four_devices.py --devices cortexA76cpu_tflite21 --spos 200

Per device it prints, each against a FLOPs line (one ms-per-FLOP figure fitted on the same
training networks, with the same per-source weights):

- leave-one-network-out over nn-Meter's reference networks (each fit sees every other
  measurement, never the network it predicts);
- a held-out 30 % of the Pixel 4 networks (Cortex-A76 and Adreno 640 only; predicted as the
  Pixel 4 measured them, i.e. with the fitted source factor);
- the NAS-Bench-201 held-out split (the 20 % no package has seen);
- SPOS (NNI's ShuffleNetSpace) at 1x3x224x224: the predicted latency range of random
  candidates (lookup table) and the share of their kernels inside the packages' feature
  ranges (exported candidates).

Kernel configurations of the ImageNet networks come from benchmarks/data/
four_devices_kernel_configs.json (built from pytorchcv by --rebuild-configs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nnmeter_nas.datasets.nb201 import NB201_DEVICES, NB201Table  # noqa: E402
from nnmeter_nas.fitting.builtin import BORROW_FC, BuiltinData, fit_params  # noqa: E402
from nnmeter_nas.fitting.device_fit import NATIVE_SOURCES  # noqa: E402
from nnmeter_nas.fitting.device_package import PACKAGE_VERSION  # noqa: E402
from nnmeter_nas.fitting.metrics import accuracy_report  # noqa: E402
from nnmeter_nas.fitting.nb201_devices import DEVICES  # noqa: E402
from nnmeter_nas.fitting.sources import (DEFAULT_CONFIG_CACHE,  # noqa: E402
                                         load_imagenet_configs)

#: What the manifests say about the data left out of the fit.
NOT_USED = ("pixel4_ops_gpu.csv: only its fully connected rows are fitted on (Adreno 640, "
            "source pixel4, no per-network overhead); its convolution, pooling and mean rows "
            "are not: as samples they lowered NAS-Bench-201 held-out accuracy "
            "(docs/four_devices.md); efficientnet_edge_* fail to load (ONNX Shape op)")


def flops_of(sample) -> float:
    """FLOPs of a network's convolutions and fully connected layers (from its kernels)."""
    total = 0.0
    for (reg, x), n in sample.configs.items():
        if reg in ("conv-bn-relu", "dwconv-bn-relu"):
            total += n * x[5] * 2e6
        elif reg == "fc":
            total += n * x[2] * 2e6
    return total


def flops_line(train, weights=None) -> float:
    """ms per FLOP minimising the weighted relative squared error over ``train`` (each
    source's rows sharing one total weight, as the fit does)."""
    from collections import Counter

    counts = Counter(s.source for s in train)
    w = np.array([(weights or {}).get(s.source, 1.0) / counts[s.source] for s in train])
    f = np.array([flops_of(s) for s in train])
    y = np.array([s.latency_ms for s in train])
    a = f / y
    return float(np.sum(w * a) / np.sum(w * a * a))


def factors_text(f: dict) -> str:
    """A source's fitted factors: one figure, or the rest's and those of the groups that
    differ (1x1 convolutions, additions)."""
    own = [f"{name} {f[g]:.3f}" for g, name in (("conv1x1", "1x1 convolutions"),
                                                 ("add", "additions"))
           if g in f and abs(f[g] - f["conv"]) > 1e-9]
    return f"{f['conv']:.3f}" + (f" ({', '.join(own)})" if own else "")


def report(pred, y) -> dict:
    r = accuracy_report(np.asarray(pred), np.asarray(y))
    r["within_20pct"] = float(np.mean(np.abs(np.asarray(pred) / np.asarray(y) - 1) <= 0.2))
    return r


def fmt(r: dict) -> str:
    return (f"+-10%: {100 * r['within_10pct']:5.1f}%  +-20%: {100 * r['within_20pct']:5.1f}%  "
            f"RMSPE: {100 * r['rmspe']:5.1f}%  tau: {r['kendall_tau']:.3f}  (n={r['n']})")


def spos_check(packages: dict, n_table: int, n_export: int, seed: int) -> dict:
    """Latency range of ``n_table`` random SPOS candidates at 224x224 (lookup table) and the
    share of kernels in domain over ``n_export`` exported candidates, per package path."""
    import nnmeter_nas
    from nnmeter_nas.nni.table_builder import build_latency_table
    from nnmeter_nas.search_spaces.spos import spos_random_sample, spos_space
    from nnmeter_nas.graph.torch_export import export_onnx

    preds = {d: nnmeter_nas.LatencyPredictor.from_path(p) for d, p in packages.items()}
    space = spos_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = build_latency_table(space, list(preds.values()), [1, 3, 224, 224])
    rng = np.random.default_rng(seed)
    samples = [spos_random_sample(rng) for _ in range(n_table)]
    out = {}
    for d in preds:
        lat = np.array([table.latency(s, d) for s in samples])
        out[d] = {"n": n_table, "min_ms": float(lat.min()), "median_ms": float(np.median(lat)),
                  "max_ms": float(lat.max())}
    inside = {d: [0, 0] for d in preds}
    types_out = {d: {} for d in preds}
    for s in samples[:n_export]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_model = export_onnx(space.freeze(s), [1, 3, 224, 224])
            for d, p in preds.items():
                bd = p.predict_kernels(onnx_model)
                for k in bd:
                    if k.status != "predicted":
                        continue
                    inside[d][1] += 1
                    inside[d][0] += bool(k.in_domain)
                    if not k.in_domain:
                        types_out[d][k.regressor] = types_out[d].get(k.regressor, 0) + 1
    for d in preds:
        out[d]["kernels_in_domain"] = inside[d][0] / max(inside[d][1], 1)
        out[d]["n_exported"] = n_export
        out[d]["out_of_domain_by_type"] = types_out[d]
    return out


def main(argv=None) -> int:
    # The Cortex-A76 and Adreno 640 fits stop at 10 alternation rounds by design of the shipped
    # settings; the package fit's convergence is printed (and kept in its manifest) instead of
    # one warning per leave-one-out fit.
    from nnmeter_nas.errors import ConvergenceWarning
    warnings.simplefilter("ignore", ConvergenceWarning)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", nargs="+", default=list(NB201_DEVICES))
    ap.add_argument("--out", default=str(ROOT / "nnmeter_nas" / "data" / "predictors"))
    ap.add_argument("--no-write", action="store_true", help="do not write the packages")
    ap.add_argument("--pixel4-test", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spos", type=int, default=1000, help="random SPOS candidates (0: skip)")
    ap.add_argument("--spos-export", type=int, default=20,
                    help="of which exported for the in-domain share")
    ap.add_argument("--rebuild-configs", action="store_true",
                    help="rebuild the ImageNet networks' kernel configurations with pytorchcv")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    t0 = time.time()
    if args.rebuild_configs:
        from nnmeter_nas.datasets.imagenet_devices import (REFERENCE_TO_PYTORCHCV,
                                                           build_network, pixel4_latencies,
                                                           reference_network_name)
        from nnmeter_nas.fitting.network_configs import cached_network_configs

        names = sorted({reference_network_name(m) for m in REFERENCE_TO_PYTORCHCV}
                       | {m.name for m in pixel4_latencies("cortexA76cpu_tflite21")})
        for n in names:
            try:
                cached_network_configs([n], build_network, DEVICES[args.devices[0]].rules(),
                                       DEFAULT_CONFIG_CACHE, progress=False)
            except Exception as exc:  # reported: the network is left out
                print(f"!! {n}: {type(exc).__name__}: {str(exc)[:160]}")
    configs = load_imagenet_configs()
    print(f"ImageNet kernel configurations: {len(configs)} networks from "
          f"{DEFAULT_CONFIG_CACHE.relative_to(ROOT)}")
    results: dict = {}
    written = {}
    # every fit below (leave-one-out, Pixel 4 held out, the package) takes its samples and
    # settings from nnmeter_nas.fitting.builtin, as fit_device_package does
    data = BuiltinData(configs)
    for dev in args.devices:
        print(f"\n=== {dev} ({DEVICES[dev].hardware}, {DEVICES[dev].framework})")
        nb_train, nb_test = data.nb201(dev)
        im = data.imagenet(dev)
        refs = [s for s in im if s.source == "nnmeter-reference"]
        pix = [s for s in im if s.source == "pixel4"]
        # the Pixel 4 GPU's fully connected layers timed per operator (Adreno 640 only)
        ops = data.fc_operators(dev)
        res: dict = {"n": {"nb201_train": len(nb_train), "nnmeter_reference": len(refs),
                           "pixel4": len(pix), "pixel4_fc_operators": len(ops)}}
        print(f"networks: NAS-Bench-201 {len(nb_train)} train / {len(nb_test)} held out, "
              f"nn-Meter reference {len(refs)}, Pixel 4 {len(pix)}"
              + (f" (+ {len(ops)} fully connected operators)" if ops else ""))

        # Leave one reference network out (of every source: a donor's rows too).
        loo, loo_flops = [], []
        for s in refs:
            fit, train = data.fit(dev, exclude={s.name})
            assert all(t.name != s.name for t in train)
            loo.append(fit.predict([s])[0])
            native = [t for t in train if t.source in NATIVE_SOURCES]
            loo_flops.append(flops_line(native, fit_params(dev)["source_weights"]) * flops_of(s))
        y = [s.latency_ms for s in refs]
        res["reference_loo"] = report(loo, y)
        res["reference_loo_flops"] = report(loo_flops, y)
        res["reference_loo_rows"] = {s.name: {"measured_ms": s.latency_ms, "predicted_ms": p,
                                              "flops_line_ms": q}
                                     for s, p, q in zip(refs, loo, loo_flops)}
        print("nn-Meter reference networks, leave-one-out")
        print(f"  ours       {fmt(res['reference_loo'])}")
        print(f"  FLOPs line {fmt(res['reference_loo_flops'])}")
        for s, p in zip(refs, loo):
            print(f"    {s.name:20s} {s.latency_ms:9.2f} ms  predicted {p:9.2f} "
                  f"({100 * (p / s.latency_ms - 1):+5.1f}%)")

        # Pixel 4 held-out split (no operator of a held-out network either).
        if pix:
            order = np.random.default_rng(args.seed).permutation(len(pix))
            n_te = int(round(args.pixel4_test * len(pix)))
            te = set(order[:n_te].tolist())
            p_tr = [s for i, s in enumerate(pix) if i not in te]
            p_te = [s for i, s in enumerate(pix) if i in te]
            fit, _ = data.fit(dev, exclude={s.name for s in p_te})
            yp = [s.latency_ms for s in p_te]
            res["pixel4_heldout"] = report(fit.predict(p_te), yp)
            k = flops_line(p_tr)
            res["pixel4_heldout_flops"] = report([k * flops_of(s) for s in p_te], yp)
            print(f"Pixel 4 networks, {len(p_te)} held out (fitted on the other {len(p_tr)})")
            print(f"  ours       {fmt(res['pixel4_heldout'])}")
            print(f"  FLOPs line {fmt(res['pixel4_heldout_flops'])}")

        # The package: every measurement except the NAS-Bench-201 held-out networks.
        fit, train = data.fit(dev)
        n_borrowed = sum(t.source == "borrowed" for t in train)
        if n_borrowed:
            res["n"]["borrowed_fc_operators"] = n_borrowed
            res["borrowed_from"] = BORROW_FC[dev]
        yn = [s.latency_ms for s in nb_test]
        res["nb201_heldout"] = report(fit.predict(nb_test), yn)
        native = [t for t in train if t.source in NATIVE_SOURCES]
        k = flops_line(nb_train)
        res["nb201_heldout_flops"] = report([k * flops_of(s) for s in nb_test], yn)
        res["factors"] = fit.factors_
        res["overhead_ms"] = fit.overhead_ms_
        print("NAS-Bench-201 held-out networks (package fit)")
        print(f"  ours       {fmt(res['nb201_heldout'])}")
        print(f"  FLOPs line {fmt(res['nb201_heldout_flops'])}")
        if fit.factors_:
            print("  source factors (latency there = factor x this device's): "
                  + ", ".join(f"{s} {factors_text(f)}" for s, f in fit.factors_.items()))
            print(f"  alternation: {fit.n_alternations} rounds, last factor change "
                  f"{100 * fit.factor_change_:.2f}% ({'' if fit.converged_ else 'not '}converged)")
        results[dev] = res
        if not args.no_write:
            written[dev] = write(dev, fit, train, res, Path(args.out) / dev, native)
            print(f"wrote {written[dev]}")
    if args.spos and written:
        print(f"\n=== SPOS (NNI ShuffleNetSpace) at 1x3x224x224, {args.spos} random candidates")
        sp = spos_check(written, args.spos, args.spos_export, args.seed)
        for dev, r in sp.items():
            results[dev]["spos224"] = r
            print(f"{dev:26s} {r['min_ms']:8.2f} - {r['max_ms']:8.2f} ms (median "
                  f"{r['median_ms']:.2f}); kernels in domain "
                  f"{100 * r['kernels_in_domain']:.1f}% of {r['n_exported']} exported "
                  f"candidates; out of domain by type: {r['out_of_domain_by_type']}")
            add_spos_to_manifest(written[dev], r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


def write(dev, fit, train, res, dest, native) -> Path:
    from nnmeter_nas.fitting.device_package import write_device_package

    spec = DEVICES[dev]
    counts = res["n"]
    sources = (f"{counts['nb201_train']} NAS-Bench-201 networks (C=16, 32x32), "
               f"{counts['nnmeter_reference']} of nn-Meter's reference ImageNet networks at "
               "224x224 measured on this device (built as nn-Meter's model generator defines "
               "them)")
    if counts["pixel4"]:
        sources += (f" and {counts['pixel4']} pytorchcv ImageNet CNNs measured on a Pixel 4 with "
                    "a newer TFLite (same hardware; fitted factor "
                    f"{factors_text(fit.factors_['pixel4'])})")
    if counts.get("pixel4_fc_operators"):
        sources += (f", plus the {counts['pixel4_fc_operators']} fully connected layers of those "
                    "networks timed per operator on the Pixel 4 GPU (same factor)")
    loo = res["reference_loo"]
    nb = res["nb201_heldout"]
    trusted = (f"Leave-one-out on the reference networks: {100 * loo['within_10pct']:.0f}% "
               f"within +-10%, RMSPE {100 * loo['rmspe']:.1f}%; NAS-Bench-201 held-out: "
               f"{100 * nb['within_10pct']:.1f}% within +-10%")
    if "pixel4_heldout" in res:
        trusted += (f"; held-out Pixel 4 networks: "
                    f"{100 * res['pixel4_heldout']['within_10pct']:.0f}% within +-10%")
    borrowed = ""
    if counts.get("borrowed_fc_operators"):
        borrowed = (f" From the {res['borrowed_from']} it borrows one structure only: the "
                    f"{counts['borrowed_fc_operators']} fully connected layers timed per "
                    "operator on the Pixel 4 GPU, scaled to this device by the ratio of the two "
                    "devices' measured latencies over their shared reference networks (its own "
                    "VGG and AlexNet classifiers cannot separate a classifier's cost from the "
                    "convolutions'); they never make a kernel count as calibrated here.")
    desc = (f"Latency of {spec.hardware}, {spec.framework}, fitted offline to {sources} "
            "(not nn-Meter's own predictor). Kernel cost models extrapolate in proportion to "
            "the work, so 224x224 inputs and wide layers get physically scaled estimates. "
            f"{trusted}.{borrowed} Trusted where a kernel's cost terms lie within the ranges "
            "the measured kernels of its type gave them (in_domain True; KernelCostModel."
            "in_domain); kernel types no measured network held (e.g. channelshuffle on the "
            "GPUs) get their family's shared cost and are flagged in_domain=False. An installed "
            "official nn-Meter predictor of the same name takes precedence.")
    data = {"nb201": "../shared/data/nb201_four_devices (training split, seed 0, 80%)",
            "imagenet": "../shared/data/four_devices_imagenet (nnmeter_reference_models.csv, "
                        "pixel4_e2e.csv); networks built from pytorchcv, kernel configurations "
                        "in benchmarks/data/four_devices_kernel_configs.json",
            "train_indices_sha": nb201_train_sha(),
            "not_used": NOT_USED}
    validation = {k: v for k, v in res.items() if k.startswith(("reference_loo", "pixel4_",
                                                                "nb201_"))
                  and not k.endswith("_rows")}
    validation["held_out"] = res["nb201_heldout"]
    validation["by_network"] = res["reference_loo_rows"]
    validation["printed_by"] = "python benchmarks/four_devices.py"
    return write_device_package(dest, fit, train, name=dev, device=dev,
                                framework=spec.framework, fusion_rules=spec.fusion_rules,
                                description=desc, hardware=spec.hardware,
                                version=PACKAGE_VERSION, validation=validation, data=data,
                                built_by="benchmarks/four_devices.py")


def nb201_train_sha() -> str:
    """Digest of the NAS-Bench-201 training indices (as the nb201 packages recorded it)."""
    from nnmeter_nas.fitting.nb201_package import indices_digest, nb201_split

    cells = NB201Table.load().measured_on_all()
    idx = np.array([c.index for c in cells])
    return indices_digest(idx[~nb201_split(idx)])


def add_spos_to_manifest(dest: Path, r: dict) -> None:
    """Record the SPOS figures in the written package (its checksums cover other files)."""
    m = dest / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest.setdefault("validation", {})["spos224"] = r
    tmp = m.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(m)


if __name__ == "__main__":
    sys.exit(main())
