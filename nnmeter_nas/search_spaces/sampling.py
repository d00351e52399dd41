"""Random networks of the built-in search spaces, ready to export: for calibrating a predictor
on a space (``nnmeter-nas predictors calibrate``) and for the accuracy benchmark.

Each item is ``(arch, factory, input_shape)``: the architecture (a SPOS sample dict or a
NAS-Bench-201 arch string), a zero-argument function building the frozen ``torch.nn.Module``,
and its NCHW input shape. Draws are deterministic in the seed and never repeat an architecture
or return one of ``exclude``.
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable, Iterable, Iterator

from . import registry

#: Spaces of the registry that can draw random networks, when this module was imported (the
#: registry itself, :data:`nnmeter_nas.search_spaces.registry.SPACES`, is the live list).
SPACES = tuple(name for name, entry in registry.SPACES.items() if entry.random_networks)


def sampled_spaces() -> list[str]:
    """Names of the registered spaces that can draw random networks."""
    return [name for name, entry in registry.SPACES.items() if entry.random_networks]


def random_networks(space: str, n: int, seed: int = 0, *, exclude: Iterable[Any] = ()
                    ) -> Iterator[tuple[Any, Callable[[], Any], tuple[int, int, int, int]]]:
    """``n`` random networks of ``space`` (a registered space with a sampler: ``spos``,
    ``spos-small`` (SPOS with the 32x32 stem), ``nb201``, or one added with
    :func:`~nnmeter_nas.search_spaces.registry.register_space`)."""
    entry = registry.SPACES.get(space)
    if entry is None or entry.random_networks is None:
        raise ValueError(f"unknown search space {space!r}; built-in spaces: "
                         f"{', '.join(sampled_spaces())} (for another space, export networks "
                         "of it to ONNX and pass the files)")
    return entry.random_networks(n, seed, exclude)


def builtin_random_networks(space: str, n: int, seed: int = 0, exclude: Iterable[Any] = ()
                            ) -> Iterator[tuple[Any, Callable[[], Any], tuple[int, int, int, int]]]:
    """The samplers of the built-in spaces (``spos``, ``spos-small``, ``nb201``)."""
    rng = random.Random(seed)
    if space in ("spos", "spos-small"):
        from .spos import SPOS_INPUT_SHAPE, SPOS_SMALL_INPUT_SHAPE, SPOSSpace, spos_random_sample

        small = space == "spos-small"
        shape = SPOS_SMALL_INPUT_SHAPE if small else SPOS_INPUT_SHAPE
        seen = {json.dumps(a, sort_keys=True) for a in exclude}
        done = 0
        while done < n:
            sample = spos_random_sample(rng)
            key = json.dumps(sample, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            done += 1
            yield sample, (lambda s=sample: SPOSSpace.frozen_factory(s)(small_input=small)), \
                tuple(shape)
    elif space == "nb201":
        from .nasbench201 import NB201_OPS, build_nb201_network

        skip = set(exclude)
        seen: set[str] = set()
        while len(seen) < n:
            ops = [rng.choice(NB201_OPS) for _ in range(6)]
            arch = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)
            if arch in seen or arch in skip:
                continue
            seen.add(arch)
            yield arch, (lambda a=arch: build_nb201_network(a)), (1, 3, 32, 32)
    else:
        raise ValueError(f"no built-in sampler for search space {space!r}")
