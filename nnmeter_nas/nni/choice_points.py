"""Choice points of an NNI 3 PyTorch model space, and cheap frozen networks of its samples.

A *choice point* is a part of the network whose latency depends only on a few labels: a
``LayerChoice``, an ``InputChoice``, a mutable module such as ``MutableConv2d`` whose arguments are
``nni.choice``, or one block of a ``Repeat`` with a mutable depth (present only when the depth
exceeds its index). The latency table stores, for each choice point, one latency per combination
of its labels' values; everything outside the choice points is the fixed part.

:func:`find_choice_points` walks the space once. :func:`covering_samples` picks a few complete
samples that together show every combination of every choice point (4 for SPOS: all-k3, all-k5,
all-k7, all-xcep). :class:`SpaceFreezer` builds the frozen network of a sample the way NNI's
``freeze`` lays it out, but shares the modules with the space instead of re-running ``__init__``.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch.nn as nn
from nni.mutable import Categorical, CategoricalMultiple, Mutable
from nni.mutable.annotation import MutableAnnotation
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, MutableModule, Repeat

from ..errors import UnsupportedSpaceError
from .sample_values import hashable_value, jsonable_value

__all__ = [
    "ChoicePoint",
    "SpaceLayout",
    "find_choice_points",
    "covering_samples",
    "SpaceFreezer",
    "hashable_value",
]

DEFAULT_MAX_COMBINATIONS = 256


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass
class ChoicePoint:
    """One part of the network whose latency is a function of ``labels`` only.

    Attributes
    ----------
    name : str
        Module path in the model space (``"features.0"``; a Repeat block is ``"stage.blocks.2"``).
    frozen_path : str
        Module path of the same part in a frozen network (``"features.0"``, ``"stage.2"``).
    kind : str
        ``"LayerChoice"``, ``"InputChoice"``, ``"Repeat block"`` or the mutable module's class.
    labels : tuple of str
        The labels the part depends on, in a fixed order.
    combos : list of tuple
        Every combination of the labels' values (hashable, see :func:`hashable_value`).
    inactive : frozenset of int
        Indices of combos in which the part is absent from the network (a Repeat block beyond
        the depth); their latency is 0.
    """

    name: str
    frozen_path: str
    kind: str
    labels: tuple[str, ...]
    combos: list[tuple] = field(default_factory=list)
    inactive: frozenset[int] = frozenset()

    def combo_of(self, sample: Mapping[str, Any]) -> tuple:
        """The combination of this point's labels in ``sample`` (hashable)."""
        return tuple(hashable_value(sample[label]) for label in self.labels)


@dataclass
class SpaceLayout:
    """The choice points of a space and every label's values, as the latency table needs them."""

    space_class: str
    points: list[ChoicePoint]
    label_values: dict[str, list[Any]]  # label -> values (as NNI samples hold them)
    #: digest of every parameter's and buffer's name and shape (:func:`weight_shapes_digest`):
    #: the same class and labels built with other layer sizes (a width multiplier) differ here
    weights: str = ""

    @property
    def labels(self) -> list[str]:
        return list(self.label_values)

    def signature(self) -> dict[str, Any]:
        """JSON-able description used to check that a table belongs to a space."""
        return {
            "class": self.space_class,
            "labels": {k: [jsonable_value(v) for v in vs] for k, vs in self.label_values.items()},
            "points": [[p.name, list(p.labels)] for p in self.points],
            **({"weights": self.weights} if self.weights else {}),
        }


def weight_shapes_digest(module: nn.Module) -> str:
    """SHA-256 (hex, first 16 digits) of the names and shapes of ``module``'s parameters and
    buffers, in order: two spaces of one class whose layers differ in size (channels, kernel
    sizes) differ here, whatever their labels. Lazy, not yet shaped tensors count as ``?``."""
    import hashlib

    h = hashlib.sha256()
    for kind, items in (("p", module.named_parameters()), ("b", module.named_buffers())):
        for name, t in items:
            try:
                shape = "x".join(str(int(d)) for d in t.shape)
            except (RuntimeError, ValueError):
                shape = "?"
            h.update(f"{kind}:{name}:{shape};".encode())
    return h.hexdigest()[:16]


def _label_values(label: str, mutable: Any, where: str) -> list[Any] | None:
    if isinstance(mutable, MutableAnnotation):
        return None  # constraints restrict samples but are not choices
    if isinstance(mutable, Categorical):
        return list(mutable.values)
    if isinstance(mutable, CategoricalMultiple):
        return [list(v) for v in mutable.grid()]
    raise UnsupportedSpaceError(
        f"label {label!r} ({type(mutable).__name__}, in {where}) is not categorical; a latency table "
        "needs a finite set of values per label: replace it with nni.choice(...)")


def _module_labels(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, Mutable):
        return dict(module.simplify())
    labels: dict[str, Any] = {}
    for _, desc in MutableModule.named_mutable_descendants(module):  # type: ignore[arg-type]
        labels.update(desc.simplify())
    return labels


def _is_plain_container(module: nn.Module) -> bool:
    """A MutableModule that only groups other modules and freezes them in place."""
    if module.mutables:
        return False
    if isinstance(module, ModelSpace):
        return True
    return type(module).freeze is MutableModule.freeze


def find_choice_points(model_space: nn.Module,
                       max_combinations: int = DEFAULT_MAX_COMBINATIONS) -> SpaceLayout:
    """Walk ``model_space`` (an NNI 3 PyTorch ``ModelSpace``) and list its choice points.

    Raises :class:`UnsupportedSpaceError` naming the module/label for a non-categorical label, a
    part with more than ``max_combinations`` value combinations, or a label registered on the
    space itself that no module uses.
    """
    if not isinstance(model_space, MutableModule):
        raise UnsupportedSpaceError(
            f"{type(model_space).__name__} is not an NNI model space (nni.nas.nn.pytorch.ModelSpace)")
    space_labels = model_space.simplify()
    label_values: dict[str, list[Any]] = {}
    for label, mutable in space_labels.items():
        values = _label_values(label, mutable, type(model_space).__name__)
        if values is not None:
            label_values[label] = values

    points: list[ChoicePoint] = []

    def add_point(name: str, frozen_path: str, kind: str, labels: Mapping[str, Any],
                  depth: Any = None, block_index: int | None = None) -> None:
        ordered = tuple(label for label in labels if label in label_values)
        for label in labels:
            if label not in label_values:
                _label_values(label, labels[label], f"{kind} {name!r}")  # raises if unsupported
        sizes = [len(label_values[label]) for label in ordered]
        total = 1
        for s in sizes:
            total *= s
        if total > max_combinations:
            raise UnsupportedSpaceError(
                f"{kind} {name!r} depends on labels {list(ordered)} with {total} value combinations "
                f"(more than max_combinations={max_combinations}); its latency cannot be tabulated "
                "per combination. Split it into smaller choices or raise max_combinations.")
        combos = [tuple(hashable_value(v) for v in combo)
                  for combo in itertools.product(*(label_values[label] for label in ordered))]
        inactive: set[int] = set()
        if depth is not None and block_index is not None:
            for k, combo in enumerate(combos):
                sample = {label: label_values[label][_index(label_values[label], v)]
                          for label, v in zip(ordered, combo)}
                if int(depth.freeze(sample)) <= block_index:
                    inactive.add(k)
        points.append(ChoicePoint(name, frozen_path, kind, ordered, combos, frozenset(inactive)))

    def visit(module: nn.Module, name: str, frozen: str) -> None:
        if isinstance(module, LayerChoice):
            add_point(name, frozen, "LayerChoice", _module_labels(module))
        elif isinstance(module, Repeat):
            if isinstance(module.depth_choice, int):
                for j, block in enumerate(module.blocks[:module.depth_choice]):
                    visit(block, _join(name, f"blocks.{j}"), _join(frozen, str(j)))
            else:
                depth_labels = dict(module.depth_choice.simplify())
                for j, block in enumerate(module.blocks):
                    labels = dict(depth_labels)
                    labels.update(_module_labels(block))
                    add_point(_join(name, f"blocks.{j}"), _join(frozen, str(j)), "Repeat block",
                              labels, depth=module.depth_choice, block_index=j)
        elif isinstance(module, InputChoice):
            add_point(name, frozen, "InputChoice", _module_labels(module))
        elif isinstance(module, MutableModule) and not _is_plain_container(module):
            labels = _module_labels(module)
            if labels:
                add_point(name, frozen, type(module).__name__, labels)
        else:
            for child_name, child in module.named_children():
                visit(child, _join(name, child_name), _join(frozen, child_name))

    for child_name, child in model_space.named_children():
        visit(child, child_name, child_name)

    covered = {label for p in points for label in p.labels}
    dangling = [label for label in label_values if label not in covered]
    if dangling:
        raise UnsupportedSpaceError(
            f"labels {dangling} of {type(model_space).__name__} are not used by any LayerChoice, "
            "InputChoice, Repeat or mutable module (they are registered on the space itself and used "
            "in its forward); the latency table cannot tell which layers they change. Move the "
            "choice into a mutable module (e.g. LayerChoice or MutableConv2d).")
    cls = type(model_space)
    return SpaceLayout(f"{cls.__module__}.{cls.__qualname__}", points, label_values,
                       weight_shapes_digest(model_space))


def _index(values: Sequence[Any], value: Any) -> int:
    key = hashable_value(value)
    for i, v in enumerate(values):
        if hashable_value(v) == key:
            return i
    raise ValueError(value)


def covering_samples(layout: SpaceLayout) -> list[dict[str, Any]]:
    """Few complete samples that together hold every active combination of every choice point.

    Greedy: each new sample takes, point by point, a not yet covered combination that agrees with
    the labels already fixed. Labels no point needs take their first value.
    """
    points = layout.points
    uncovered = [[k for k in range(len(p.combos)) if k not in p.inactive] for p in points]
    samples: list[dict[str, Any]] = []
    while any(uncovered):
        chosen: dict[str, Any] = {}  # label -> hashable value
        order = sorted(range(len(points)), key=lambda i: -len(uncovered[i]))
        for i in order:
            p = points[i]
            for k in uncovered[i]:
                combo = p.combos[k]
                if all(chosen.get(label, v) == v for label, v in zip(p.labels, combo)):
                    chosen.update(zip(p.labels, combo))
                    break
        sample = {}
        for label, values in layout.label_values.items():
            if label in chosen:
                sample[label] = values[_index(values, chosen[label])]
            else:
                sample[label] = values[0]
        before = sum(map(len, uncovered))
        for i, p in enumerate(points):
            k = p.combos.index(p.combo_of(sample))
            if k in uncovered[i]:
                uncovered[i].remove(k)
        if sum(map(len, uncovered)) == before:  # cannot happen; guards an endless loop
            raise RuntimeError("covering_samples made no progress")
        samples.append(sample)
    return samples


class SpaceFreezer:
    """Frozen networks of samples of ``model_space``, laid out like NNI's ``freeze``.

    ``LayerChoice`` becomes its chosen candidate, ``Repeat`` an ``nn.Sequential`` of the first
    ``depth`` blocks, other mutable modules their own ``freeze(sample)``; modules without
    mutables inside are shared with the space, not copied (so no weights are re-initialised).
    Spaces with mutables registered on the space itself fall back to ``model_space.freeze``.
    The returned network is for tracing and export; train ``model_space.freeze(sample)`` instead.
    """

    def __init__(self, model_space: nn.Module) -> None:
        self.space = model_space
        self._mutable_ids: set[int] = set()
        cls = type(model_space)
        # Only spaces frozen the standard way (NNI re-running __init__ with the sample, which
        # lays modules out as recursive_freeze does) can be viewed without calling freeze.
        self._fast = (isinstance(model_space, MutableModule) and not model_space.mutables
                      and cls.freeze is MutableModule.freeze
                      and not cls.should_invoke_fixed_module())
        self._mark(model_space)

    def _mark(self, module: nn.Module) -> bool:
        found = isinstance(module, Mutable)
        for child in module.children():
            found = self._mark(child) or found
        if found:
            self._mutable_ids.add(id(module))
        return found

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        if not self._fast:
            return self.space.freeze(dict(sample))  # type: ignore[operator]
        return self._view(self.space, sample, root=True)

    def _view(self, module: nn.Module, sample: Mapping[str, Any], root: bool = False) -> nn.Module:
        if id(module) not in self._mutable_ids:
            return module
        if isinstance(module, LayerChoice):
            return self._view(module[module.choice.freeze(sample)], sample)
        if isinstance(module, Repeat):
            depth = module.depth_choice
            if not isinstance(depth, int):
                depth = int(depth.freeze(sample))
            return nn.Sequential(*[self._view(b, sample) for b in module.blocks[:depth]])
        if not root and isinstance(module, MutableModule) and not _is_plain_container(module):
            return module.freeze(dict(sample))
        view = copy.copy(module)
        view._modules = {name: (self._view(child, sample) if child is not None else None)
                         for name, child in module._modules.items()}
        return view
