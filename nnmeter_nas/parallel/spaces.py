"""Search spaces by name, so that any process (a Ray worker on another node) can build one.

``spos`` (SPOS ShuffleNetV2 space at 224x224), ``spos-small`` (its 32x32 variant), ``nb201``
(NAS-Bench-201 at 32x32), ``toy`` (a 54-candidate space for tests and examples) or
``MODULE:CLASS`` (any NNI 3 model space class importable there, built with no arguments). A
model-space object can be given as well; it is then pickled to the workers.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import UsageError

__all__ = ["SpaceSpec", "resolve_space", "BUILTIN_SPACES", "SpaceSpecError"]


class SpaceSpecError(UsageError, ValueError):
    """A search-space name that cannot be resolved, or a space without a known input shape."""


def _spos() -> Any:
    from ..search_spaces.spos import SPOSSpace

    return SPOSSpace()


def _spos_small() -> Any:
    from ..search_spaces.spos import SPOSSpace

    return SPOSSpace(small_input=True)


def _nb201() -> Any:
    from ..search_spaces.nasbench201 import NasBench201Space

    return NasBench201Space()


def _toy() -> Any:
    from .toy_space import ToySpace

    return ToySpace()


#: name -> (factory, NCHW input shape, description)
BUILTIN_SPACES: dict[str, tuple[Callable[[], Any], tuple[int, ...], str]] = {
    "spos": (_spos, (1, 3, 224, 224), "SPOS ShuffleNetV2 space (NNI ShuffleNetSpace), 4^20 "
                                      "candidates, 224x224"),
    "spos-small": (_spos_small, (1, 3, 32, 32), "SPOS space with a stride-1 stem for 32x32 "
                                                "inputs"),
    "nb201": (_nb201, (1, 3, 32, 32), "NAS-Bench-201 cell space, 5^6 = 15,625 candidates, "
                                      "32x32"),
    "toy": (_toy, (1, 3, 16, 16), "toy space for tests and examples, 54 candidates, 16x16"),
}


@dataclass
class SpaceSpec:
    """A buildable description of a search space and its NCHW input shape.

    ``name`` is a built-in name or ``MODULE:CLASS``; ``instance`` a model-space object given
    directly. :meth:`build` returns the space (built once per process and cached).
    """

    name: str
    input_shape: tuple[int, ...]
    instance: Any = None
    _built: Any = field(default=None, repr=False, compare=False)

    def build(self) -> Any:
        if self.instance is not None:
            return self.instance
        if self._built is None:
            self._built = _factory(self.name)()
        return self._built

    @property
    def key(self) -> str:
        """Identifies the space in a job's description (resume checks)."""
        if self.instance is not None:
            cls = type(self.instance)
            return f"{cls.__module__}:{cls.__qualname__} (object)"
        return self.name

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_built"] = None  # workers build their own copy
        return state


def _factory(name: str) -> Callable[[], Any]:
    if name in BUILTIN_SPACES:
        return BUILTIN_SPACES[name][0]
    if ":" not in name:
        raise SpaceSpecError(f"unknown search space {name!r}; use one of "
                             f"{sorted(BUILTIN_SPACES)} or MODULE:CLASS (an NNI model space class)")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpaceSpecError(f"cannot import module {module_name!r} of search space {name!r}: "
                             f"{exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpaceSpecError(f"module {module_name!r} has no attribute {attr!r} (search "
                                 f"space {name!r})") from None
    if not callable(obj):
        raise SpaceSpecError(f"{name!r} is not a class or factory of a model space")
    return obj


def resolve_space(space: Any, input_shape: Sequence[int] | None = None) -> SpaceSpec:
    """A :class:`SpaceSpec` for a name, ``MODULE:CLASS``, a model-space object or a SpaceSpec.

    ``input_shape`` (NCHW) overrides the space's own; a space of ``MODULE:CLASS`` or an object
    without a built-in shape needs it unless it has an ``input_shape`` attribute.
    """
    if isinstance(space, SpaceSpec):
        if input_shape is not None:
            return SpaceSpec(space.name, _shape(input_shape), space.instance)
        return space
    if isinstance(space, str):
        name = space.strip()
        if name in BUILTIN_SPACES:
            shape = _shape(input_shape) if input_shape is not None else BUILTIN_SPACES[name][1]
            return SpaceSpec(name, shape)
        factory = _factory(name)
        if input_shape is not None:
            return SpaceSpec(name, _shape(input_shape))
        shape = getattr(factory, "input_shape", None)
        if not isinstance(shape, (tuple, list)):
            spec = SpaceSpec(name, ())
            shape = getattr(spec.build(), "input_shape", None)
            if not isinstance(shape, (tuple, list)):
                raise SpaceSpecError(f"search space {name!r} does not say its input shape; pass "
                                     "input_shape=(N, C, H, W) (--input-shape 1,3,224,224)")
            spec.input_shape = _shape(shape)
            return spec
        return SpaceSpec(name, _shape(shape))
    if hasattr(space, "forward") and hasattr(space, "simplify"):
        shape = input_shape if input_shape is not None else getattr(space, "input_shape", None)
        if shape is None:
            raise SpaceSpecError(f"{type(space).__name__} does not say its input shape; pass "
                                 "input_shape=(N, C, H, W)")
        return SpaceSpec(f"{type(space).__module__}:{type(space).__qualname__}", _shape(shape),
                         instance=space)
    raise SpaceSpecError(f"cannot use a {type(space).__name__} as a search space; pass a name "
                         f"({sorted(BUILTIN_SPACES)}), MODULE:CLASS or an NNI model space")


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise SpaceSpecError(f"input shape must be a sequence of ints, got {shape!r}") from None
    if len(out) != 4 or any(d <= 0 for d in out):
        raise SpaceSpecError(f"input shape must be 4 positive ints (N, C, H, W), got {out}")
    return out


def freeze_function(model_space: Any) -> Callable[[dict], Any]:
    """How to freeze candidates of ``model_space`` quickly.

    A space whose class defines its own ``freeze`` (NAS-Bench-201 builds the deployed network,
    without dead edges) is frozen with it; otherwise NNI's layout is reproduced by
    :class:`~nnmeter_nas.nni.choice_points.SpaceFreezer`, which shares modules with the space
    instead of re-running ``__init__`` (same operators and shapes, much faster).
    """
    for cls in type(model_space).__mro__:
        if "freeze" in vars(cls):
            if not cls.__module__.startswith("nni."):
                return lambda sample: model_space.freeze(dict(sample))
            break
    from ..nni.choice_points import SpaceFreezer

    return SpaceFreezer(model_space).freeze
