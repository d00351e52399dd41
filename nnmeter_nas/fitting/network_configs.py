"""Kernel configurations of named networks, computed once and kept in a JSON cache.

Building an ImageNet network and exporting it takes 1-40 s; its kernel configurations under a
device's fusion rules (:func:`.configs.kernel_configs`) are a few hundred bytes. The cache maps
``network name -> [[regressor, [features...], count], ...]`` plus the fusion rules and feature
set it was computed with, so a cache built under other rules is never used by mistake.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..kernels.fusion_rules import FusionRules
from .configs import kernel_configs


def counter_to_json(cnt: Counter) -> list:
    return [[r, list(x), int(n)] for (r, x), n in sorted(cnt.items())]


def counter_from_json(rows: Iterable) -> Counter:
    return Counter({(str(r), tuple(float(v) for v in x)): int(n) for r, x, n in rows})


def cached_network_configs(names: Iterable[str], build: Callable[[str], Any],
                           rules: FusionRules, cache: str | Path, *,
                           feature_set: str = "nnmeter-nas-1",
                           input_shape: tuple[int, ...] = (1, 3, 224, 224),
                           progress: bool = True) -> dict[str, Counter]:
    """``{name: Counter of kernel configurations}`` for each network, from ``cache`` where it
    holds them, else built with ``build(name)`` (a torch module) and added to the cache
    (rewritten atomically after each network)."""
    from ..graph import load_graph

    cache = Path(cache)
    key = {"fusion_rules": rules.to_dict(), "feature_set": feature_set,
           "input_shape": list(input_shape)}
    data: dict = {"key": key, "networks": {}}
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            data = old
    names = list(names)
    todo = [n for n in names if n not in data["networks"]]
    bar = None
    if todo and progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc="kernel configurations", unit="net")
        except ImportError:
            bar = None
    for name in todo:
        graph = load_graph(build(name), input_shape=input_shape)
        rows = counter_to_json(kernel_configs(graph, rules, feature_set=feature_set))
        if cache.is_file():  # another process may have added networks meanwhile: keep them
            now = json.loads(cache.read_text())
            if now.get("key") == key:
                data["networks"] = {**now["networks"], **data["networks"]}
        data["networks"][name] = rows
        _write_json(cache, data)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {n: counter_from_json(data["networks"][n]) for n in names}


def load_network_configs(cache: str | Path) -> Mapping[str, Counter]:
    """Every network of a cache file (no building)."""
    data = json.loads(Path(cache).read_text())
    return {n: counter_from_json(rows) for n, rows in data["networks"].items()}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
