"""Where ``predict_many``'s CPU time goes over the 17 networks of benchmarks/nnmeter_parity.py.

Prints the median CPU time (``time.process_time``, --repeats runs) of each stage over all the
networks: reading the ONNX files (as nnmeter_parity.py writes them: folded, fully shaped) and
the torch modules (torch front end) into graphs, validating the graphs, detecting kernels,
extracting features, ``predict_many`` on the graphs read (detection, features and the batched
regressors), and ``predict_many`` on the files and on the modules end to end. Predictor: the
parity benchmark's synthetic forests (nn-Meter's CPU forest sizes), imported as a package.
The stages run with the numpy forest walk (a fresh user process's; this script imports
scikit-learn, which would otherwise select the compiled walk, see nnmeter_parity.py), and the
``predict_many`` rows once more with the compiled walk (a long scoring run's).

    python benchmarks/predict_many_stages.py --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cpu_median(fn, repeats: int) -> float:
    """Median CPU seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        out.append(time.process_time() - c)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-spos", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    import onnx

    import nnmeter_parity as parity
    from nnmeter_nas.graph import load_graph
    from nnmeter_nas.graph.constant_folding import fold_constants
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.graph.validate import validate_graph
    from nnmeter_nas.kernels.detector import detect_kernels
    from nnmeter_nas.packages.format import PredictorPackage
    from nnmeter_nas.packages.nnmeter_import import import_nnmeter_package
    from nnmeter_nas.predictor import LatencyPredictor

    work = Path(tempfile.mkdtemp(prefix="nnmeter-stages-"))
    pkg = work / "nnmeter_pkg"
    pkg.mkdir()
    for name, est in parity.synthetic_forests(args.seed).items():
        with open(pkg / f"{name}.pkl", "wb") as f:
            pickle.dump(est, f)
    (pkg / "fusion_rules.json").write_text(json.dumps(parity.RULES))
    ours = LatencyPredictor(PredictorPackage.load(
        import_nnmeter_package(pkg, work / "ours", name="parity", version="1.0")))
    nets = parity.networks(args.n_spos, args.seed)
    shape = (1, 3, 224, 224)
    files = []
    for name, m in nets.items():
        path = work / f"{name}.onnx"
        onnx.save(fold_constants(export_onnx(m, shape), max_elems=1 << 40), path)
        files.append(str(path))
    mods = list(nets.values())
    rules = ours.package.fusion_rules
    parity.set_tree_walk(ours, "numpy")
    ours.predict_many(files)  # warm: imports, first calls
    ours.predict_many(mods, input_shape=shape)
    graphs = [load_graph(f) for f in files]
    kernels = [detect_kernels(g, rules) for g in graphs]
    n, r = len(files), args.repeats
    import torch

    from nnmeter_nas.graph import torch_frontend as tf

    def patch_and_restore() -> None:
        """What torch_to_graph does to the modules around its pass (eval mode set directly,
        the common layers' forwards patched, then both restored), without the pass."""
        for module in mods:
            session = tf._Session(torch, module)
            tf._restore(session, *tf._prepare(session, module))
    rows = [
        ("read the ONNX files (load_graph, incl. validation)",
         cpu_median(lambda: [load_graph(f) for f in files], r)),
        ("read the torch modules (load_graph, incl. validation)",
         cpu_median(lambda: [load_graph(m, input_shape=shape) for m in mods], r)),
        ("  of which: set up, restore the modules (eval mode, forwards)",
         cpu_median(patch_and_restore, r)),
        ("validate the graphs", cpu_median(lambda: [validate_graph(g) for g in graphs], r)),
        ("detect kernels", cpu_median(lambda: [detect_kernels(g, rules) for g in graphs], r)),
        ("extract features", cpu_median(lambda: [ours._kernel_features(k) for k in kernels], r)),
        ("predict_many(graphs): detection, features, batched regressors",
         cpu_median(lambda: ours.predict_many(graphs), r)),
        ("predict_many(files)", cpu_median(lambda: ours.predict_many(files), r)),
        ("predict_many(torch modules)",
         cpu_median(lambda: ours.predict_many(mods, input_shape=shape), r)),
    ]
    parity.set_tree_walk(ours, "compiled")
    ours.predict_many(files)  # builds the compiled forms
    rows += [
        ("predict_many(graphs), compiled forest walk",
         cpu_median(lambda: ours.predict_many(graphs), r)),
        ("predict_many(files), compiled forest walk",
         cpu_median(lambda: ours.predict_many(files), r)),
        ("predict_many(torch modules), compiled forest walk",
         cpu_median(lambda: ours.predict_many(mods, input_shape=shape), r)),
    ]
    print(f"CPU time over the {n} networks, median of {r} runs (numpy forest walk unless "
          "named):")
    for label, t in rows:
        print(f"  {label:66s} {1000 * t:7.1f} ms  ({1000 * t / n:5.2f} ms per network)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
