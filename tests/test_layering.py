"""The package's layering: data flows one way and heavy frameworks are imported only where used."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nnmeter_nas"

# Each layer may import only the layers listed for it (and itself, errors, the standard
# library and third-party packages).
ORDER = ["graph", "kernels", "features", "regressors", "predictor"]
ALLOWED = {
    "graph": set(),
    "kernels": {"graph"},
    "features": {"graph", "kernels"},
    "regressors": set(),
    # per-kernel corrections the predictor applies (plain numbers, no pipeline)
    "calibration": set(),
    "cache_model": set(),
    "packages": {"graph", "kernels", "features", "regressors", "predictor", "cache_model"},
    "predictor": {"graph", "kernels", "features", "regressors", "packages", "calibration",
                  "cache_model"},
    # beside the pipeline: read-only benchmark data and plain torch models (import nothing)
    "datasets": set(),
    "zoo": set(),
}
# Tools and the NNI-facing layer: they may import any layer above, never each other's private
# parts (``fitting`` fits the NAS-Bench-201 packages, as ``builder`` builds measured ones).
UPPER = {"nni", "strategies", "search_spaces", "parallel", "cli", "builder", "fitting",
         "testing", "examples"}
# Shared by every layer (exceptions and warnings, the helper that issues warnings at the
# user's line, the lazy-export helper) or not code (package data).
SHARED = {"errors", "warn", "_lazy", "data", "__init__"}


def _internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG).with_suffix("")
    pkg_parts = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 \
                    else pkg_parts
                mod = (node.module or "").split(".")
                parts = [p for p in base + mod if p]
                if not node.module:
                    parts += [a.name for a in node.names]
            elif node.module and node.module.startswith("nnmeter_nas"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(parts[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nnmeter_nas."):
                    found.add(a.name.split(".")[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_do_not_import_upper_ones(layer):
    target = PKG / layer
    files = list(target.rglob("*.py")) if target.is_dir() else [PKG / f"{layer}.py"]
    for f in files:
        layer_of = layer
        bad = _internal_imports(f) - ALLOWED[layer] - {layer_of, "errors"}
        assert not (bad & (set(ALLOWED) | UPPER)), f"{f.relative_to(PKG)} imports {sorted(bad)}"


def test_every_package_has_a_layer():
    """A new package or top-level module must be placed in the layering (and in
    docs/ARCHITECTURE.md) before it can be imported from."""
    names = {p.stem for p in PKG.iterdir()
             if (p.is_dir() and not p.name.startswith("__")) or p.suffix == ".py"}
    assert names - set(ALLOWED) - UPPER - SHARED == set()
    doc = (PKG.parent / "docs" / "ARCHITECTURE.md").read_text()
    diagram = doc.split("```")[1]  # the layer diagram
    undocumented = sorted(n for n in names - {"__init__", "data"}
                          if not re.search(rf"(^|[\s(,]){n}\b", diagram, re.M))
    assert not undocumented, f"docs/ARCHITECTURE.md does not place {undocumented}"


def test_import_is_light():
    code = ("import sys, nnmeter_nas; "
            "heavy = [m for m in ('torch', 'onnx', 'nni', 'ray', 'sklearn', 'onnxruntime') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("script", sorted(
    str(p.relative_to(PKG.parent)) for d in ("benchmarks", "examples")
    for p in (PKG.parent / d).glob("*.py")))
def test_scripts_compile(script):
    """Benchmark and example scripts run only by hand; at least they must parse."""
    compile((PKG.parent / script).read_text(), script, "exec")


@pytest.mark.parametrize("script", sorted(p.name for p in (PKG.parent / "benchmarks").glob("*.py")))
def test_benchmark_scripts_import_and_answer_help(script):
    """The scripts behind the README's figures import (their top level runs) and parse
    arguments: ``--help`` prints a usage line and exits 0 without measuring anything."""
    env = {**os.environ, "PYTHONPATH": str(PKG.parent), "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, str(PKG.parent / "benchmarks" / script), "--help"],
                         capture_output=True, text=True, env=env, cwd=PKG.parent, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage:"), run.stdout[:500]
