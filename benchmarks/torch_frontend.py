"""Speed of the torch front end against the ONNX export path it replaces, within one run.

Prints (medians of --repeats, all on this process's core; wall-clock and this process's CPU
time, which on a shared core is what the work itself costs):
- torch module -> latency for MobileNetV2 at 224x224 through ``predict`` (torch front end,
  the default) and through the ONNX export (``load_graph(..., torch_frontend="onnx")``), and
  their ratio (target: <= 50 ms, 20x the export path's ~1 s);
- ``predict_many`` over the 17 networks of benchmarks/nnmeter_parity.py as torch modules and
  as the exported ONNX files (the ONNX-file path is unchanged code);
- ``predict`` of one ONNX file (MobileNetV2), to compare with earlier runs.

Predictor: a synthetic one (nnmeter_nas.testing.make_dummy_predictor): its regressors cost
about what real forests cost; the figures measure reading and kernel detection.

    python benchmarks/torch_frontend.py --repeats 5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-spos", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import onnx
    import torch

    from nnmeter_nas.graph import load_graph
    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_nas.testing import make_dummy_predictor
    from nnmeter_parity import median_times, networks

    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    pred = make_dummy_predictor(directory=tempfile.mkdtemp(prefix="bench-tf-"))
    shape = (1, 3, 224, 224)
    nets = networks(args.n_spos, 0)
    mbv2 = nets["mobilenet_v2"]
    pred.predict(mbv2, input_shape=shape)
    t_trace, c_trace = median_times(lambda: pred.predict(mbv2, input_shape=shape), args.repeats)
    t_export, c_export = median_times(lambda: pred.predict(
        load_graph(mbv2, input_shape=shape, torch_frontend="onnx")), args.repeats)
    print(f"MobileNetV2 224x224 torch module -> latency: torch front end "
          f"{1000 * t_trace:.1f} ms (CPU {1000 * c_trace:.1f} ms), ONNX export path "
          f"{1000 * t_export:.0f} ms (CPU {1000 * c_export:.0f} ms): {t_export / t_trace:.1f}x "
          f"(CPU {c_export / c_trace:.1f}x)  target <= 50 ms: "
          f"{'MET' if t_trace <= 0.05 else 'NOT MET'} in wall time, "
          f"{'MET' if c_trace <= 0.05 else 'NOT MET'} in CPU time")
    work = Path(tempfile.mkdtemp(prefix="bench-tf-onnx-"))
    files = []
    for name, m in nets.items():
        path = work / f"{name}.onnx"
        onnx.save(export_onnx(m, shape), path)
        files.append(str(path))
    mods = list(nets.values())
    t_many_mods, c_many_mods = median_times(
        lambda: pred.predict_many(mods, input_shape=shape), args.repeats)
    t_many_files, c_many_files = median_times(lambda: pred.predict_many(files), args.repeats)
    print(f"predict_many over {len(mods)} networks: torch modules {t_many_mods:.3f} s "
          f"(CPU {c_many_mods:.3f} s), ONNX files {t_many_files:.3f} s (CPU {c_many_files:.3f} s)")
    t_file, c_file = median_times(
        lambda: pred.predict(files[list(nets).index("mobilenet_v2")]), args.repeats)
    print(f"predict(MobileNetV2 ONNX file): {1000 * t_file:.0f} ms (CPU {1000 * c_file:.0f} ms)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
