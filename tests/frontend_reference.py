"""The reference the torch front end's sweeps are checked against (tests/test_torch_frontend.py).

The sweeps compare the torch front end with the ONNX export path on 200 SPOS candidates at
32x32 (``spos-small``), the same 200 at 224x224 (``spos``) and 200 NAS-Bench-201 cells
(``nb201``). Exporting every candidate to ONNX again at each test run was most of the suite's
CPU time, so the ONNX path's answer for each candidate is kept in a committed file,
``tests/data/frontend_sweep_reference.json.gz``, written by
``python scripts/frontend_sweep_reference.py`` (rerun it when the ONNX export path, the ONNX
reader, the kernel detection, the features or the samplers change on purpose; the tests say so
when the file no longer matches). Per candidate it holds:

- ``arch``: the sampled architecture (the tests check that the sampler still draws it);
- ``name``: the graph's name;
- ``graph``: per node, in order, ``[type, source op, input shapes, output shapes, attributes,
  sorted indices of the producing nodes]``;
- ``kernels``: per kernel under the default fusion rules, ``[kernel type, regressor name,
  {feature set: feature vector}]``.

Values go through :func:`canonical`, which keeps what Python's ``==`` tells apart (a tuple is
not a list) and drops what it does not (a numpy scalar equals its Python value), so comparing
two records is the comparison the sweeps made between the two live graphs.

The tests compare the torch front end with this file on every candidate, and a fresh ONNX
export with this file on :func:`live_indices` (one candidate of each part, 10 per sweep), so a
change of the export path or the reader still fails a test.
"""
from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

SWEEP_SPACES = ("spos-small", "spos", "nb201")
SWEEP_SIZE = 200    # candidates per space (issue 18: 200 SPOS at each input size, 200 NB201)
SWEEP_PARTS = 10    # one test per part, so that pytest-xdist spreads a sweep over the workers
SWEEP_SEED = 2024
FORMAT = 1

REFERENCE = Path(__file__).parent / "data" / "frontend_sweep_reference.json.gz"
WRITER = "scripts/frontend_sweep_reference.py"


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data, keeping the distinctions ``==`` makes: lists, dicts (string
    keys), strings, numbers, booleans and None are kept; a tuple becomes ``{"tuple": [...]}``;
    a numpy scalar becomes its Python value, a numpy array ``{"ndarray": [...]}``."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [canonical(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"non-string keys in {value!r}")
        return {k: canonical(v) for k, v in value.items()}
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"ndarray": canonical(value.tolist())}
    raise TypeError(f"no canonical form for a {type(value).__name__}: {value!r}")


def record(graph) -> dict:
    """What the sweeps compare of a graph: its name, its nodes and its kernel list (see the
    module docstring), as JSON data."""
    from nnmeter_nas.features.extract import FEATURE_SETS, extract_features, regressor_name
    from nnmeter_nas.kernels.detector import detect_kernels
    from nnmeter_nas.kernels.fusion_rules import FusionRules

    index = {name: i for i, name in enumerate(graph.nodes)}
    nodes = [[n.type, n.source_op, canonical(n.input_shapes), canonical(n.output_shapes),
              canonical(n.attrs), sorted(index[i] for i in n.inputs)] for n in graph]
    kernels = [[k.type, regressor_name(k.type),
                {fs: canonical(extract_features(k, fs)) for fs in FEATURE_SETS}]
               for k in detect_kernels(graph, FusionRules.default())]
    # through JSON once, so that a fresh record is exactly what reading the file gives
    return json.loads(json.dumps({"name": graph.name, "graph": nodes, "kernels": kernels}))


def arch_key(arch: Any) -> str:
    return json.dumps(arch, sort_keys=True)


def sweep(space: str) -> list:
    """The sweep's ``SWEEP_SIZE`` candidates of ``space``: ``(arch, factory, input shape)``."""
    from nnmeter_nas.search_spaces.sampling import random_networks

    return list(random_networks(space, SWEEP_SIZE, seed=SWEEP_SEED))


def part_indices(part: int) -> range:
    """Indices of the sweep's candidates in part ``part``: every ``SWEEP_PARTS``-th, from it."""
    return range(part, SWEEP_SIZE, SWEEP_PARTS)


def live_indices(space: str) -> list[int]:
    """The candidates whose ONNX export is redone at each test run: one per part, a different
    position in each part (and shifted between spaces), so the 10 of a sweep spread over it."""
    shift = SWEEP_SPACES.index(space) * 7
    per_part = SWEEP_SIZE // SWEEP_PARTS
    return [part + SWEEP_PARTS * ((3 * part + shift) % per_part) for part in range(SWEEP_PARTS)]


def onnx_record(net, shape) -> dict:
    """:func:`record` of ``net`` read through the ONNX export."""
    from nnmeter_nas.graph import load_graph

    return record(load_graph(net, input_shape=shape, torch_frontend="onnx"))


def trace_record(net, shape) -> dict:
    """:func:`record` of ``net`` read by the torch front end (no fallback)."""
    from nnmeter_nas.graph import load_graph

    return record(load_graph(net, input_shape=shape, torch_frontend="trace"))


@functools.lru_cache(maxsize=2)
def load_reference(path: str = str(REFERENCE)) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def first_difference(got: Any, want: Any, where: str = "") -> str | None:
    """Where two records first differ (a path such as ``graph[12][4]['pads']``), or None."""
    if type(got) is not type(want):
        return f"{where or 'record'}: {got!r:.200} != {want!r:.200}"
    if isinstance(got, dict):
        for k in sorted(set(got) | set(want)):
            if k not in got or k not in want:
                return f"{where}[{k!r}]: only in {'reference' if k in want else 'this record'}"
            d = first_difference(got[k], want[k], f"{where}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(got, list):
        for i, (a, b) in enumerate(zip(got, want)):
            d = first_difference(a, b, f"{where}[{i}]")
            if d:
                return d
        if len(got) != len(want):
            return f"{where}: {len(got)} items != {len(want)} in the reference"
        return None
    return None if got == want else f"{where}: {got!r:.200} != {want!r:.200}"


def write_reference(path: Path = REFERENCE, spaces=SWEEP_SPACES, log=print) -> dict:
    """Export every candidate of the sweeps to ONNX and write their records to ``path``."""
    import time

    import onnx
    import torch

    torch.set_num_threads(1)  # as the tests (one_torch_thread); the export gives the same graph
    out = {"format": FORMAT, "written_by": WRITER, "torch": torch.__version__,
           "onnx": onnx.__version__, "seed": SWEEP_SEED, "size": SWEEP_SIZE, "sweeps": {}}
    for space in spaces:
        t0 = time.process_time()
        rows = []
        for arch, make, shape in sweep(space):
            rows.append({"arch": arch, **onnx_record(make(), shape)})
        out["sweeps"][space] = rows
        log(f"{space}: {len(rows)} candidates exported, {time.process_time() - t0:.0f} CPU s")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same records give the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(json.dumps(out, separators=(",", ":")).encode("utf-8"))
    load_reference.cache_clear()
    return out
