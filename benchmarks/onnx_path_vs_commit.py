"""The ONNX-file path of this tree against the same path at an earlier commit, in one run.

Prints, for this working tree and for ``--commit`` (default: main just before the torch front
end came in, i.e. the first parent of the first main-line commit with
``nnmeter_nas/graph/torch_frontend.py``: the code when issue 18 was taken up), the CPU time of
this process (medians of --repeats, ``time.process_time``; on a shared core the CPU time is
what the work costs) of:

- ``predict(file)`` of each exported ONNX file one by one (median over the files, and
  MobileNetV2's);
- ``predict_many(files)`` over all of them.

Networks: the 17 of benchmarks/nnmeter_parity.py (zoo CNNs and 5 SPOS candidates at
224x224), exported once by this tree. Predictor: a synthetic package
(``nnmeter_nas.testing.make_dummy_predictor``, written by each tree's own code). Each tree
runs in its own Python process, and the two alternate --rounds times so that a change in the
machine's load falls on both.

    python benchmarks/onnx_path_vs_commit.py --repeats 5 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
from nnmeter_nas.testing import make_dummy_predictor
files, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
pred = make_dummy_predictor(directory=tempfile.mkdtemp(prefix="bench-onnx-path-"))
def cpu(fn):
    fn()  # warm-up (imports, caches)
    ts = []
    for _ in range(repeats):
        c = time.process_time(); fn(); ts.append(time.process_time() - c)
    return statistics.median(ts)
one = {f: cpu(lambda f=f: pred.predict(f)) for f in files}
many = cpu(lambda: pred.predict_many(files))
lat = pred.predict_many(files)
print(json.dumps({"one": one, "many": many, "latency": lat}))
"""


def _tree_at(commit: str) -> Path:
    """The package source at ``commit``, extracted (``git archive``) to a temporary folder."""
    dest = Path(tempfile.mkdtemp(prefix="onnx-path-commit-"))
    tar = dest / "src.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", commit, "nnmeter_nas"], stdout=f,
                       check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def _run(tree: Path, files: list[str], repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(files), str(repeats)],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        sys.exit(f"runner failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commit", default=None,
                    help="git commit to compare with (default: main before the torch front "
                         "end, see above)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-spos", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import warnings

    warnings.simplefilter("ignore")
    import onnx

    from nnmeter_nas.graph.torch_export import export_onnx
    from nnmeter_parity import networks

    commit = args.commit or subprocess.run(
        ["git", "-C", str(ROOT), "log", "--first-parent", "--format=%H", "--reverse", "--",
         "nnmeter_nas/graph/torch_frontend.py"], capture_output=True, text=True,
        check=True).stdout.split()[0] + "^1"
    label = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %ad %s",
                            "--date=short", commit], capture_output=True, text=True,
                           check=True).stdout.strip()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"earlier commit: {label[:100]}")
    work = Path(tempfile.mkdtemp(prefix="onnx-path-files-"))
    files = []
    for name, m in networks(args.n_spos, 0).items():
        path = work / f"{name}.onnx"
        onnx.save(export_onnx(m, (1, 3, 224, 224)), path)
        files.append(str(path))
    trees = {"this tree": ROOT, "earlier": _tree_at(commit)}
    res: dict[str, list[dict]] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for k, tree in trees.items():
            res[k].append(_run(tree, files, args.repeats))
    mbv2 = next(f for f in files if f.endswith("mobilenet_v2.onnx"))
    summary = {}
    for k, runs in res.items():
        summary[k] = (statistics.median(statistics.median(r["one"].values()) for r in runs),
                      statistics.median(r["one"][mbv2] for r in runs),
                      statistics.median(r["many"] for r in runs))
        print(f"{k:10s}: predict(file) median over {len(files)} files {1000 * summary[k][0]:.1f} "
              f"ms CPU, MobileNetV2 {1000 * summary[k][1]:.1f} ms CPU; predict_many(files) "
              f"{summary[k][2]:.3f} s CPU  (rounds: "
              f"{', '.join('%.3f' % r['many'] for r in runs)})")
    same = all(r["latency"] == res["earlier"][0]["latency"] for rs in res.values() for r in rs)
    new, old = summary["this tree"], summary["earlier"]
    verdict = "MET" if new[0] <= old[0] and new[2] <= old[2] else "NOT MET"
    print(f"this tree / earlier: predict(file) {new[0] / old[0]:.2f}x, MobileNetV2 "
          f"{new[1] / old[1]:.2f}x, predict_many {new[2] / old[2]:.2f}x of the CPU time "
          f"(target: no slower: {verdict}); "
          f"latencies identical: {same}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
