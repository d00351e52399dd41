"""Peak memory of refusing two hostile inputs (issue 16), each in a fresh process.

1. A package zip of about 400 KB whose listed kernel inflates to 400 MiB, installed with
   ``install_predictor``: the member's declared size is checked before decompression.
2. A torch module predicted with ``input_shape=(1, 3, 100000, 100000)``: the size is checked
   before the input tensor is allocated.

Prints the error and the process's peak RSS (MiB) before and after each attempt.

    PYTHONPATH=$PWD taskset -c 0 python benchmarks/bad_input_memory.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CHILD = r"""
import os, resource, sys, tempfile
os.environ["NNMETER_NAS_HOME"] = tempfile.mkdtemp()
case, arg = sys.argv[1], sys.argv[2]
if case == "torch":
    import torch
    from nnmeter_nas.graph import load_graph
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
else:
    from nnmeter_nas.packages.registry import install_predictor
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    if case == "torch":
        load_graph(net, input_shape=(1, 3, 100000, 100000))
    else:
        install_predictor(arg)
    print("ACCEPTED")
except Exception as exc:
    print(f"{type(exc).__name__}: {str(exc)[:150]}")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"peak RSS {before:.0f} MiB before, {after:.0f} MiB after (+{after - before:.0f} MiB)")
"""


def _bomb(tmp: Path) -> Path:
    from nnmeter_nas.kernels.fusion_rules import FusionRules
    from nnmeter_nas.packages.format import write_package
    from nnmeter_nas.testing import grid_tree

    pkg = write_package(tmp / "pkg", name="bomb", version="1.0", device="bomb",
                        framework="test", fusion_rules=FusionRules.default(),
                        regressors={"relu": grid_tree([0], [[7, 14]], lambda p: p[0], 2)})
    zpath = tmp / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(pkg.rglob("*")):
            rel = p.relative_to(pkg).as_posix()
            if p.is_file():
                z.writestr(rel, bytes(400 << 20) if rel == "kernels/relu.npz"
                           else p.read_bytes())
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert "kernels/relu.npz" in manifest["files"]
    return zpath


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        zpath = _bomb(Path(tmp))
        print(f"zip bomb: {zpath.stat().st_size / 1e3:.0f} KB archive, listed kernel "
              f"inflating to {400} MiB")
        out = subprocess.run([sys.executable, "-c", CHILD, "zip", str(zpath)],
                             capture_output=True, text=True)
        print("  " + out.stdout.strip().replace("\n", "\n  "))
    print("torch module, input_shape=(1, 3, 100000, 100000):")
    out = subprocess.run([sys.executable, "-c", CHILD, "torch", "-"], capture_output=True,
                         text=True)
    print("  " + (out.stdout.strip() or out.stderr.strip()[-300:]).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
