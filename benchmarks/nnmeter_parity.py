"""Parity and speed against nn-Meter 2.0's ONNX pipeline, given the same fusion rules and
regressors.

nn-Meter 2.0 runs in its own virtual environment (it needs ``setuptools<81`` and is a test-only
oracle, never a dependency)::

    python -m venv /tmp/venv-nnm && /tmp/venv-nnm/bin/pip install nn-meter==2.0 \
        'setuptools<81' onnx scikit-learn==<same as ours>
    python benchmarks/nnmeter_parity.py --nnmeter-python /tmp/venv-nnm/bin/python

(``--nnmeter-python`` defaults to ``$NNMETER_PYTHON``, else ``/tmp/venv-nnm/bin/python``.)

What it does:
1. Trains one random forest per nn-Meter kernel type on synthetic features (scikit-learn, the
   same version in both environments; nn-Meter's own CPU forest sizes: 190-690 trees), pickles them as nn-Meter's release layout
   (``<kernel>.pkl`` + ``fusion_rules.json``), and imports that folder into our format.
2. Exports the networks (classic CNNs of ``nnmeter_nas.zoo`` and random SPOS candidates) to ONNX.
3. nn-Meter (``OnnxConverter`` -> ``KernelDetector`` -> ``nn_predict``) and nnmeter_nas predict
   every file; it compares latencies and kernel lists and times both (median of repeats).

Which forest walk our figures use is set, not left to the process state (see
``TreeEnsemble.tree_walk``): this script imports scikit-learn to train its forests, which a
user's process (nnmeter_nas, NNI) does not, and ``tree_walk="auto"`` would then take the
compiled walk from the first call. So every figure is for the numpy walk, the state of a fresh
user process (its first 2M (row, tree) pairs per regressor), and ``predict_many`` is timed
once more with the compiled walk, the state of a long scoring run (past 2M pairs per
regressor, scikit-learn installed) or of a process that has scikit-learn imported.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np

RULES = {
    "BF_conv_bn": {"obey": True}, "BF_conv_relu": {"obey": True},
    "BF_dwconv_bn": {"obey": True}, "BF_dwconv_relu": {"obey": True},
    "BF_bn_relu": {"obey": True}, "BF_add_relu": {"obey": True},
    "BF_conv_add": {"obey": False}, "BF_fc_relu": {"obey": True},
}
# nn-Meter regressor name -> (feature count, trees, max depth). Forest sizes follow the
# hyper-parameters nn-Meter 2.0 uses for its CPU predictors, so the regressors cost what
# nn-Meter's own do.
KERNELS = {
    "conv-bn-relu": (7, 320, 70), "dwconv-bn-relu": (7, 240, 50), "fc": (4, 370, 50),
    "global-avgpool": (2, 370, 70), "hswish": (2, 190, 50), "relu": (2, 370, 50),
    "se": (2, 290, 20), "split": (2, 190, 50), "add": (3, 370, 50), "addrelu": (3, 570, 50),
    "maxpool": (5, 210, 50), "avgpool": (5, 370, 50), "bn": (2, 370, 50),
    "bnrelu": (2, 370, 50), "channelshuffle": (2, 370, 50), "concat": (6, 690, 100),
}

NNMETER_RUNNER = textwrap.dedent("""
    import json, pickle, sys, time, glob, os, logging
    logging.disable(logging.WARNING)
    import onnx
    from nn_meter.ir_converter.onnx_converter import OnnxConverter
    from nn_meter.kernel_detector import KernelDetector
    from nn_meter.predictor.prediction.predict_by_kernel import nn_predict
    from nn_meter.predictor.prediction.extract_feature import get_predict_features
    from nn_meter.predictor.prediction.utils import get_kernel_name
    pkg, files, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    predictors = {}
    for p in glob.glob(os.path.join(pkg, "*.pkl")):
        with open(p, "rb") as f:
            predictors[os.path.basename(p)[:-4]] = pickle.load(f)
    rules = os.path.join(pkg, "fusion_rules.json")
    out = {}
    for f in files:
        times, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            graph = OnnxConverter(onnx.load(f)).convert()
            kd = KernelDetector(rules)
            kd.load_graph(graph)
            kernels = kd.get_kernels()
            lat = nn_predict(predictors, kernels)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        feats = get_predict_features(kernels)
        klist = []
        for layer in feats.values():
            op, fv = list(layer.items())[0]
            name = get_kernel_name(op)
            if name in predictors:
                klist.append([name, [float(x) for x in fv]])
        out[f] = {"latency_ms": float(lat), "times_s": times, "cpu_s": cpu, "kernels": klist}
    print(json.dumps(out))
""")


def synthetic_forests(seed: int = 0):
    """One small random forest per kernel type, fitted on random features."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(seed)
    forests = {}
    n = 300
    for name, (nf, trees, depth) in KERNELS.items():
        X = np.column_stack([rng.choice([1, 2, 3, 7, 14, 28, 56, 112, 224], n)] +
                            [rng.integers(1, 1024, n) for _ in range(nf - 1)]).astype(float)
        if nf == 7:
            X[:, 3] = rng.choice([1, 3, 5, 7], n)
            X[:, 4] = rng.choice([1, 2], n)
            X[:, 5] = X[:, 0] ** 2 * X[:, 1] * X[:, 2] * X[:, 3] ** 2 / X[:, 4] ** 2 / 1e6
            X[:, 6] = X[:, 1] * X[:, 2] * X[:, 3] ** 2 / 1e6
        y = 0.01 + np.log1p(X).sum(axis=1) * 0.05 + rng.normal(0, 0.01, n)
        forests[name] = RandomForestRegressor(n_estimators=trees, max_depth=depth,
                                              random_state=seed, n_jobs=1).fit(X, y)
    return forests


def networks(n_spos: int, seed: int):
    import torch

    from nnmeter_nas.zoo import build

    nets = {}
    for name in ["resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                 "shufflenet_v2", "mnasnet_a1", "squeezenet1_1", "vgg11_bn", "googlenet_like",
                 "densenet_like", "proxyless_mobile"]:
        torch.manual_seed(seed)
        nets[name] = build(name)
    if n_spos:
        import random

        from nni.nas.hub.pytorch import ShuffleNetSpace
        from nni.nas.space import model_context

        space = ShuffleNetSpace()
        labels = list(space.simplify())
        rnd = random.Random(seed)
        for i in range(n_spos):
            sample = {lab: rnd.choice(["k3", "k5", "k7", "xcep"]) for lab in labels}
            with model_context(sample):
                nets[f"spos_{i}"] = ShuffleNetSpace()
    return nets


def set_tree_walk(predictor, walk: str) -> None:
    """Make every forest of ``predictor``'s package descend its trees with ``walk``."""
    for regs in (predictor.package.regressors, predictor.package.cold_regressors):
        for ens in regs.values():
            if hasattr(ens, "tree_walk"):
                ens.tree_walk = walk


def median_time(fn, repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    return median_times(fn, repeats)[0]


def median_times(fn, repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` calls of ``fn``: (wall-clock s, this process's CPU s). On a
    shared core the CPU time is what the work costs; the wall time adds the waits for it."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nnmeter-python", default=os.environ.get("NNMETER_PYTHON",
                                                               "/tmp/venv-nnm/bin/python"),
                    help="Python of a virtual environment with nn-Meter 2.0 installed (see "
                         "the module docstring); default: $NNMETER_PYTHON, else "
                         "/tmp/venv-nnm/bin/python, where the docstring's commands create it")
    ap.add_argument("--n-spos", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    from nnmeter_nas.graph.constant_folding import fold_constants
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.packages.format import PredictorPackage, write_package
    from nnmeter_nas.predictor import LatencyPredictor
    from nnmeter_nas.regressors import TreeEnsemble

    work = Path(tempfile.mkdtemp(prefix="nnmeter-parity-"))
    pkg = work / "nnmeter_pkg"
    pkg.mkdir()
    forests = synthetic_forests(args.seed)
    for name, est in forests.items():
        with open(pkg / f"{name}.pkl", "wb") as f:
            pickle.dump(est, f)
    (pkg / "fusion_rules.json").write_text(json.dumps(RULES))
    try:  # the importer is the path users take; fall back to direct conversion
        from nnmeter_nas.packages.nnmeter_import import import_nnmeter_package

        ours_dir = import_nnmeter_package(pkg, work / "ours", name="parity", version="1.0")
        how = "imported with nnmeter_nas.packages.nnmeter_import"
    except ImportError:
        ours_dir = write_package(work / "ours", name="parity", version="1.0", device="parity",
                                 framework="synthetic", feature_set="nnmeter-2.0",
                                 regressors={k: TreeEnsemble.from_sklearn(v)
                                             for k, v in forests.items()},
                                 fusion_rules=RULES)
        how = "converted with TreeEnsemble.from_sklearn"
    ours = LatencyPredictor(PredictorPackage.load(ours_dir))
    set_tree_walk(ours, "numpy")  # a fresh user process's walk (see the module docstring)

    nets = networks(args.n_spos, args.seed)
    files = {}
    for name, m in nets.items():
        import onnx

        path = work / f"{name}.onnx"
        # nn-Meter's converter needs every node shaped: fold constants (and the Identity
        # nodes on weights) first; both pipelines then read the very same file.
        onnx.save(fold_constants(export_onnx(m, (1, 3, 224, 224)), max_elems=1 << 40), path)
        files[name] = str(path)

    proc = subprocess.run([args.nnmeter_python, "-c", NNMETER_RUNNER, str(pkg),
                           json.dumps(list(files.values())), str(args.repeats)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"nn-Meter runner failed:\n{proc.stderr[-3000:]}")
    ref = json.loads(proc.stdout.strip().splitlines()[-1])

    import warnings

    warnings.simplefilter("ignore")
    print(f"regressors: {len(forests)} random forests, {how}")
    print(f"{'network':20s} {'nn-Meter ms':>12s} {'ours ms':>12s} {'rel diff':>10s} "
          f"{'kernels equal':>14s} {'nnm s':>8s} {'ours s':>8s}")
    diffs, speed_file, nnm_total, nnm_cpu, ours_only_hswish = [], [], 0.0, 0.0, []
    for name, path in files.items():
        r = ref[path]
        bd = ours.predict_kernels(path)
        mine = Counter((k.regressor, tuple(round(float(x), 9) for x in k.features))
                       for k in bd if k.status == "predicted")
        theirs = Counter((k, tuple(round(float(x), 9) for x in f)) for k, f in r["kernels"])
        equal = mine == theirs
        extra = mine - theirs
        rel = abs(bd.latency_ms - r["latency_ms"]) / r["latency_ms"]
        t_ours = median_time(lambda: ours.predict(path), args.repeats)
        t_nnm = statistics.median(r["times_s"])
        nnm_total += t_nnm
        nnm_cpu += statistics.median(r["cpu_s"])
        speed_file.append(t_nnm / t_ours)
        note = ""
        if not equal:
            only = sorted({k for k, _ in extra})
            note = f"  ours only: {only}; theirs only: {sorted({k for k, _ in theirs - mine})}"
            if set(only) <= {"hswish", "se"} and not (theirs - mine):
                ours_only_hswish.append(name)
        else:
            diffs.append(rel)
        print(f"{name:20s} {r['latency_ms']:12.4f} {bd.latency_ms:12.4f} {rel:10.2e} "
              f"{str(equal):>14s} {t_nnm:8.3f} {t_ours:8.3f}{note}")

    shape = (1, 3, 224, 224)
    mods = list(nets.values())
    many = {}
    for walk in ("numpy", "compiled"):
        set_tree_walk(ours, walk)
        ours.predict_many(list(files.values()))  # the compiled form is built on first need
        many[walk] = (median_times(lambda: ours.predict_many(list(files.values())),
                                   args.repeats),
                      median_times(lambda: ours.predict_many(mods, input_shape=shape),
                                   args.repeats))
    set_tree_walk(ours, "numpy")
    # torch module -> latency: the torch front end (default) and the ONNX export it replaces
    from nnmeter_nas.graph import load_graph

    def via_export(m):
        return ours.predict(load_graph(m, input_shape=shape, torch_frontend="onnx"))

    t_torch = {name: median_times(lambda m=m: ours.predict(m, input_shape=shape), args.repeats)
               for name, m in nets.items()}
    c_torch = {name: t[1] for name, t in t_torch.items()}
    t_torch = {name: t[0] for name, t in t_torch.items()}
    t_export = {name: median_time(lambda m=m: via_export(m), args.repeats)
                for name, m in list(nets.items())[:4]}
    # the torch front end gives the kernels the exported file gives
    same_torch = sum(
        [(k.regressor, k.features) for k in ours.predict_kernels(m, input_shape=shape)] ==
        [(k.regressor, k.features) for k in ours.predict_kernels(files[name])]
        for name, m in nets.items())
    print()
    print(f"networks: {len(files)}; identical kernel lists: {len(diffs)}")
    if diffs:
        print(f"largest relative latency difference where kernel lists are identical: "
              f"{max(diffs):.2e}")
    if ours_only_hswish:
        print(f"kernel lists differ only where nn-Meter 2.0 misses h-swish/SE blocks exported "
              f"by torch (HardSigmoid*x), which it counts as 0 ms: {ours_only_hswish}")
    print("single-network figures below and above: numpy forest walk (a fresh user process)")
    print(f"speed per ONNX file (median over networks of nn-Meter time / ours): "
          f"{statistics.median(speed_file):.1f}x")
    states = {"numpy": "numpy forest walk: a fresh user process (first 2M (row, tree) pairs "
                       "per regressor, scikit-learn not imported)",
              "compiled": "compiled forest walk: a long scoring run (past 2M pairs per "
                          "regressor) or scikit-learn imported"}
    for walk, ((t_many, c_many), (t_many_torch, c_many_torch)) in many.items():
        print(f"predict_many, {states[walk]}:")
        print(f"  over {len(files)} files: {t_many:.3f} s vs nn-Meter {nnm_total:.3f} s one "
              f"by one: {nnm_total / t_many:.1f}x (CPU time: {c_many:.3f} s vs {nnm_cpu:.3f} s: "
              f"{nnm_cpu / c_many:.1f}x)")
        print(f"  over the {len(mods)} torch modules (torch front end): {t_many_torch:.3f} s vs "
              f"nn-Meter {nnm_total:.3f} s one by one on their files: "
              f"{nnm_total / t_many_torch:.1f}x (CPU time: {c_many_torch:.3f} s vs "
              f"{nnm_cpu:.3f} s: {nnm_cpu / c_many_torch:.1f}x)")
    print(f"torch front end kernel lists equal to the exported files': {same_torch} of "
          f"{len(nets)}")
    print(f"torch module -> latency (torch front end), MobileNetV2: "
          f"{1000 * t_torch['mobilenet_v2']:.1f} ms (CPU {1000 * c_torch['mobilenet_v2']:.1f} ms); "
          f"median over the {len(t_torch)} networks: "
          f"{1000 * statistics.median(t_torch.values()):.1f} ms "
          f"(CPU {1000 * statistics.median(c_torch.values()):.1f} ms)")
    print(f"torch module -> latency through the ONNX export, median over "
          f"{', '.join(t_export)}: {statistics.median(t_export.values()):.3f} s "
          f"(torch front end on the same: "
          f"{1000 * statistics.median(t_torch[n] for n in t_export):.1f} ms)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
