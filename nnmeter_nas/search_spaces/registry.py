"""The search spaces known by name: one registry for scoring, calibration and the CLI.

Each entry says how to build the NNI model space, its NCHW input shape, a one-line description
and, optionally, how to draw random frozen networks of it (what ``nnmeter-nas predictors
calibrate --space`` and the accuracy benchmark need). Importing this module imports neither
torch nor NNI; the factories do when called.

Register a space of your own with :func:`register_space`::

    from nnmeter_nas.search_spaces.registry import register_space
    register_space("myspace", MySpace, (1, 3, 64, 64), "my space, 64x64")
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple

__all__ = ["SpaceEntry", "SPACES", "register_space", "NetworkSampler"]

#: ``(n, seed, exclude) -> iterator of (arch, factory, input_shape)``, see
#: :func:`nnmeter_nas.search_spaces.sampling.random_networks`.
NetworkSampler = Callable[[int, int, Iterable[Any]],
                          Iterator[tuple[Any, Callable[[], Any], tuple[int, int, int, int]]]]


class SpaceEntry(NamedTuple):
    """One named search space (a tuple, so ``entry[0]`` is the factory, ``entry[1]`` the shape)."""

    factory: Callable[[], Any]
    input_shape: tuple[int, ...]
    description: str
    random_networks: NetworkSampler | None = None


#: name -> :class:`SpaceEntry`; add to it with :func:`register_space`.
SPACES: dict[str, SpaceEntry] = {}


def register_space(name: str, factory: Callable[[], Any], input_shape: Iterable[int],
                   description: str = "", *, random_networks: NetworkSampler | None = None,
                   replace: bool = False) -> SpaceEntry:
    """Make a search space known by ``name`` (to ``score``, ``nnmeter-nas score --space`` ...).

    Parameters
    ----------
    name : str
        The name (no ``:``, which marks ``MODULE:CLASS`` specs).
    factory : callable
        Zero-argument function (or class) building the NNI model space.
    input_shape : sequence of 4 int
        NCHW input shape of the space's networks.
    description : str, default=""
        One line for listings.
    random_networks : callable, default=None
        ``(n, seed, exclude)`` -> random frozen networks, for calibrating predictors on the space.
    replace : bool, default=False
        Replace an existing entry of that name instead of refusing.

    Returns
    -------
    SpaceEntry
    """
    if ":" in name or not name.strip():
        raise ValueError(f"a search-space name is a plain word, not {name!r}")
    if name in SPACES and not replace:
        raise ValueError(f"search space {name!r} is already registered; pass replace=True")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4:
        raise ValueError(f"input_shape must be NCHW (4 ints), got {shape}")
    entry = SpaceEntry(factory, shape, description, random_networks)
    SPACES[name] = entry
    return entry


# ------------------------------------------------------------------------ built-in spaces
def _spos() -> Any:
    from .spos import SPOSSpace

    return SPOSSpace()


def _spos_small() -> Any:
    from .spos import SPOSSpace

    return SPOSSpace(small_input=True)


def _nb201() -> Any:
    from .nasbench201 import NasBench201Space

    return NasBench201Space()


def _toy() -> Any:
    from .toy import ToySpace

    return ToySpace()


def _sampler(space: str) -> NetworkSampler:
    def sample(n: int, seed: int, exclude: Iterable[Any]) -> Iterator:
        from . import sampling

        return sampling.builtin_random_networks(space, n, seed, exclude)
    return sample


register_space("spos", _spos, (1, 3, 224, 224),
               "SPOS ShuffleNetV2 space (NNI ShuffleNetSpace), 4^20 candidates, 224x224",
               random_networks=_sampler("spos"))
register_space("spos-small", _spos_small, (1, 3, 32, 32),
               "SPOS space with a stride-1 stem for 32x32 inputs",
               random_networks=_sampler("spos-small"))
register_space("nb201", _nb201, (1, 3, 32, 32),
               "NAS-Bench-201 cell space, 5^6 = 15,625 candidates, 32x32",
               random_networks=_sampler("nb201"))
register_space("toy", _toy, (1, 3, 16, 16),
               "toy space for tests and examples, 54 candidates, 16x16")
