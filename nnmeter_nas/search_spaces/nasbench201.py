"""NAS-Bench-201: a plain-PyTorch network builder and an NNI 3 model space.

Network (Dong & Yang, NAS-Bench-201, ICLR 2020), input ``(N, 3, 32, 32)``::

    stem: Conv3x3(3 -> C) + BN
    stage 1: N cells at C channels      32x32
    ResNet basic block C -> 2C, stride 2
    stage 2: N cells at 2C channels     16x16
    ResNet basic block 2C -> 4C, stride 2
    stage 3: N cells at 4C channels      8x8
    BN + ReLU, global average pool, Linear(4C -> num_classes)

Every cell is the same four-node DAG (``arch_str``, see :mod:`nnmeter_nas.datasets.nb201`); node
``k`` sums its incoming edges, the cell returns node 3. Operations: ``none`` (zero),
``skip_connect`` (identity), ``nor_conv_1x1`` / ``nor_conv_3x3`` (ReLU-Conv-BN), ``avg_pool_3x3``
(stride 1, padding 1, padding excluded from the average). The residual block is ReLU-Conv3x3(s2)-BN,
ReLU-Conv3x3-BN plus a shortcut AvgPool2x2(s2) + Conv1x1.

:func:`build_nb201_network` builds the network as it would be deployed: ``none`` edges add no
operator at all, and neither do edges that are cut off from the cell input or from the cell output
(in NAS-Bench-201 those only add constants or dead computation). So the exported ONNX graph holds
exactly the operators whose latency a device pays. A cell whose output node cannot be reached from
its input outputs zeros (one ``Mul`` by 0); such cells have chance accuracy and are not in the
benchmark table.

:class:`NasBench201Space` (NNI 3 model space, built on first use so that importing this module does
not import NNI) has one ``LayerChoice`` per edge, shared by all cells. Labels and values:

=========== ============================== ========================================================
label       edge                           values
=========== ============================== ========================================================
``cell/0_1`` node 0 -> node 1              ``none``, ``skip_connect``, ``nor_conv_1x1``,
``cell/0_2`` node 0 -> node 2              ``nor_conv_3x3``, ``avg_pool_3x3``
``cell/1_2`` node 1 -> node 2
``cell/0_3`` node 0 -> node 3
``cell/1_3`` node 1 -> node 3
``cell/2_3`` node 2 -> node 3
=========== ============================== ========================================================

The labels are those of NNI's own ``nni.nas.hub.pytorch.NasBench201``; the values are the
NAS-Bench-201 operation names (NNI's hub spells two of them ``conv_1x1`` / ``conv_3x3``;
:func:`sample_to_arch_str` accepts both). Freezing a sample returns exactly
``build_nb201_network(sample_to_arch_str(sample), C, N, num_classes)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..datasets.nb201 import (
    NB201_EDGES,
    NB201_OPS,
    ArchStrError,
    format_arch_str,
    normalize_arch_str,
    parse_arch_str,
    live_edges,
)

__all__ = [
    "NB201_LABELS",
    "NB201_CONSTRAINT_LABEL",
    "build_nb201_network",
    "NB201Network",
    "NB201Cell",
    "sample_to_arch_str",
    "arch_str_to_sample",
    "NasBench201Space",
]

#: Sample labels of the six edges, in :data:`~nnmeter_nas.datasets.nb201.NB201_EDGES` order.
NB201_LABELS: tuple[str, ...] = tuple(f"cell/{src}_{dst}" for src, dst in NB201_EDGES)

#: Label of the constraint that restricts :class:`NasBench201Space` to a set of cells.
NB201_CONSTRAINT_LABEL = "cell/allowed"

# NNI's hub space spells the two convolutions without the "nor_" prefix.
_OP_ALIASES = {"conv_1x1": "nor_conv_1x1", "conv_3x3": "nor_conv_3x3"}
_OPS_SET = frozenset(NB201_OPS)


# ----------------------------------------------------------------------------- sample <-> arch_str

def sample_to_arch_str(sample: Mapping[str, Any], *, strict: bool = True) -> str:
    """The ``arch_str`` of an NNI sample ``{label: op}`` of :class:`NasBench201Space`.

    With ``strict`` (default) labels other than :data:`NB201_LABELS` are an error; with
    ``strict=False`` they are ignored (for samples that also hold, say, evaluator choices).
    """
    return format_arch_str(sample_to_ops(sample, strict=strict))


def sample_to_ops(sample: Mapping[str, Any], *, strict: bool = True) -> tuple[str, ...]:
    """The six operations of a sample in :data:`NB201_LABELS` order (NNI hub spellings mapped)."""
    try:
        ops = tuple(sample[label] for label in NB201_LABELS)
    except KeyError:
        ops = None
    except TypeError:
        raise TypeError(f"a NAS-Bench-201 sample is a dict {{label: op}}, got {type(sample).__name__}") from None
    if ops is None:
        missing = [label for label in NB201_LABELS if label not in sample]
        raise ArchStrError(f"sample {dict(sample)} misses label(s) {missing}; a NasBench201Space sample "
                           f"has labels {list(NB201_LABELS)}")
    if strict and len(sample) > len(NB201_LABELS):
        unknown = [k for k in sample if k not in NB201_LABELS and k != NB201_CONSTRAINT_LABEL]
        if unknown:
            raise ArchStrError(f"sample has unknown label(s) {unknown}; NasBench201Space labels are "
                               f"{list(NB201_LABELS)} (pass strict=False to ignore other labels)")
    if not _OPS_SET.issuperset(ops):
        ops = tuple(_OP_ALIASES.get(v, v) if isinstance(v, str) else v for v in ops)
        for label, op, value in zip(NB201_LABELS, ops, (sample[lb] for lb in NB201_LABELS)):
            if op not in _OPS_SET:
                raise ArchStrError(f"sample label {label!r} has value {value!r}; expected one of {list(NB201_OPS)}")
    return ops


def arch_str_to_sample(arch_str: str) -> dict[str, str]:
    """The NNI sample ``{label: op}`` of an ``arch_str`` (inverse of :func:`sample_to_arch_str`)."""
    return dict(zip(NB201_LABELS, parse_arch_str(arch_str)))


# ----------------------------------------------------------------------------- plain network

class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d, as NAS-Bench-201's ``nor_conv`` operations."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: two ReLU-Conv3x3-BN (first stride 2) plus an
    AvgPool2x2(s2) + Conv1x1 shortcut. Halves H and W, ``c_in -> c_out`` channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class _ZeroOutput(nn.Module):
    """Output of a cell whose output node is cut off from its input: zeros of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _make_op(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "none":
        raise ValueError("'none' edges are dropped, not built")
    raise ArchStrError(f"unknown NAS-Bench-201 operation {op!r}; expected one of {list(NB201_OPS)}")


class NB201Cell(nn.Module):
    """One NAS-Bench-201 cell (stride 1, ``channels`` in and out) holding only its live edges.

    ``edges`` is a ModuleList in :data:`NB201_EDGES` order of the live edges; ``edge_nodes`` the
    matching ``(src, dst)`` pairs.
    """

    def __init__(self, arch_str: str, channels: int) -> None:
        super().__init__()
        self.arch_str = normalize_arch_str(arch_str)
        kept = live_edges(parse_arch_str(self.arch_str))
        self.edge_nodes: list[tuple[int, int]] = [(s, d) for s, d, _ in kept]
        self.edges = nn.ModuleList([_make_op(op, channels) for _, _, op in kept])
        self.zero = _ZeroOutput() if not kept else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.zero is not None:
            return self.zero(x)
        nodes: dict[int, torch.Tensor] = {0: x}
        for (src, dst), op in zip(self.edge_nodes, self.edges):
            y = op(nodes[src])
            nodes[dst] = nodes[dst] + y if dst in nodes else y
        return nodes[3]


class NB201Network(nn.Module):
    """A NAS-Bench-201 network for ``(N, 3, 32, 32)`` inputs; returns logits ``(N, num_classes)``."""

    def __init__(self, arch_str: str, C: int = 16, N: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        if C < 1 or N < 1 or num_classes < 1:
            raise ValueError(f"C, N and num_classes must be positive, got C={C}, N={N}, num_classes={num_classes}")
        self.arch_str = normalize_arch_str(arch_str)
        self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        channels = C
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(channels, channels * 2))
                channels *= 2
            layers.extend(NB201Cell(self.arch_str, channels) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(out), 1))


def build_nb201_network(arch_str: str, C: int = 16, N: int = 5, num_classes: int = 10) -> NB201Network:
    """Build the NAS-Bench-201 network of ``arch_str`` (C=16, N=5 is the benchmark's setting).

    Input ``(batch, 3, 32, 32)``, output logits ``(batch, num_classes)``. ``none`` edges and
    edges cut off from the cell's input or output add no modules (see the module docstring).
    """
    return NB201Network(arch_str, C=C, N=N, num_classes=num_classes)


# ----------------------------------------------------------------------------- NNI model space

_SPACE_CLASS: type | None = None


def _define_space_class() -> type:
    """Create :class:`NasBench201Space` (imports NNI; done once, on first attribute access)."""
    global _SPACE_CLASS
    if _SPACE_CLASS is not None:
        return _SPACE_CLASS

    from nni.mutable import Constraint, ConstraintViolation, SampleValidationError, label_scope
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace

    class AllowedCells(Constraint):
        """NNI constraint: the sample's cell must be one of ``arch_strs`` (e.g. the measured cells)."""

        def __init__(self, arch_strs: frozenset[str], *, label: str = NB201_CONSTRAINT_LABEL) -> None:
            self.label = label
            self.arch_strs = arch_strs
            self._ops = frozenset(parse_arch_str(a) for a in arch_strs)

        # The edge choices it reads are not declared as its leaf mutables: NNI would compare them
        # with the LayerChoices' own on every simplify(), which made sampling ~10x slower.
        # NasBench201Space lists the constraint after the edges, so samplers fill the edges first.
        def leaf_mutables(self, is_leaf):
            yield self

        def check_contains(self, sample):
            missing = [lb for lb in NB201_LABELS if lb not in sample]
            if missing:
                return SampleValidationError(f"sample misses label(s) {missing} of NasBench201Space")
            try:
                ops = sample_to_ops(sample, strict=False)
            except ArchStrError as exc:
                return SampleValidationError(str(exc))
            if ops not in self._ops:
                return ConstraintViolation(f"cell {format_arch_str(ops)} is not among the "
                                           f"{len(self.arch_strs)} allowed cells")
            return None

        def extra_repr(self) -> str:
            return f"{len(self.arch_strs)} cells, label={self.label!r}"

    AllowedCells.__module__ = __name__
    AllowedCells.__qualname__ = "NasBench201Space.AllowedCells"

    class _SupernetCell(nn.Module):
        """Cell of the (unfrozen) space: one LayerChoice per edge, all five candidates built."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.edges = nn.ModuleList()
            with label_scope("cell"):  # labels cell/0_1 ... cell/2_3, shared by all cells
                for src, dst in NB201_EDGES:
                    candidates = {op: (_Zero() if op == "none" else _make_op(op, channels)) for op in NB201_OPS}
                    self.edges.append(LayerChoice(candidates, label=f"{src}_{dst}"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nodes = [x]
            k = 0
            for dst in range(1, 4):
                total = None
                for src in range(dst):
                    y = self.edges[k](nodes[src])
                    total = y if total is None else total + y
                    k += 1
                nodes.append(total)
            return nodes[3]

    class NasBench201Space(ModelSpace):
        """NAS-Bench-201 as an NNI 3 model space (labels in the module docstring).

        Parameters
        ----------
        C, N, num_classes
            Width, cells per stage, classes (benchmark: 16, 5, 10).
        allowed_arch_strs
            If given, only these cells are valid samples (an NNI ``Constraint`` labelled
            ``cell/allowed``; sampling retries, ``freeze`` raises ``ConstraintViolation``). Use it to
            restrict the space to the cells with measured latencies.

        ``freeze(sample)`` and creation inside ``nni.nas.space.model_context(sample)`` return
        ``build_nb201_network(sample_to_arch_str(sample), C, N, num_classes)``. The unfrozen space
        is a weight-sharing supernet (every cell sums all five candidates of each edge through
        ``LayerChoice``), usable by NNI's one-shot strategies.
        """

        def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10,
                     allowed_arch_strs: Iterable[str] | None = None) -> None:
            super().__init__()
            self.C, self.N, self.num_classes = C, N, num_classes
            self.allowed = None if allowed_arch_strs is None else AllowedCells(_normalize_set(allowed_arch_strs))
            self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
            layers: list[nn.Module] = []
            channels = C
            for stage in range(3):
                if stage > 0:
                    layers.append(ResNetBasicBlock(channels, channels * 2))
                    channels *= 2
                layers.extend(_SupernetCell(channels) for _ in range(N))
            self.cells = nn.Sequential(*layers)
            self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(channels, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.lastact(self.cells(self.stem(x)))
            return self.classifier(torch.flatten(self.global_pooling(out), 1))

        # The constraint is not registered with add_mutable(): NNI would dry-run it against the
        # LayerChoices' default values (all 'none'), which it rejects. It joins the space here.
        def leaf_mutables(self, is_leaf):
            yield from super().leaf_mutables(is_leaf)
            if self.allowed is not None:
                yield from self.allowed.leaf_mutables(is_leaf)

        def check_contains(self, sample):
            exc = super().check_contains(sample)
            if exc is None and self.allowed is not None:
                exc = self.allowed.check_contains(sample)
            return exc

        def freeze(self, sample: Mapping[str, Any]) -> NB201Network:
            self.validate(sample)
            return build_nb201_network(sample_to_arch_str(sample, strict=False), self.C, self.N, self.num_classes)

        @classmethod
        def create_fixed_module(cls, sample, C: int = 16, N: int = 5, num_classes: int = 10,
                                allowed_arch_strs: Iterable[str] | None = None) -> NB201Network:
            arch = sample_to_arch_str(sample, strict=False)
            if (allowed_arch_strs is not None and arch not in allowed_arch_strs
                    and arch not in _normalize_set(allowed_arch_strs)):
                raise ConstraintViolation(f"cell {arch} is not among the allowed cells")
            return build_nb201_network(arch, C, N, num_classes)

        def sample_to_arch_str(self, sample: Mapping[str, Any]) -> str:
            """Same as the module function :func:`sample_to_arch_str`."""
            return sample_to_arch_str(sample)

        def arch_str_to_sample(self, arch_str: str) -> dict[str, str]:
            """Same as the module function :func:`arch_str_to_sample`."""
            return arch_str_to_sample(arch_str)

    NasBench201Space.__module__ = __name__
    NasBench201Space.__qualname__ = "NasBench201Space"
    NasBench201Space.AllowedCells = AllowedCells  # type: ignore[attr-defined]
    _SPACE_CLASS = NasBench201Space
    return NasBench201Space


class _Zero(nn.Module):
    """The ``none`` candidate of the supernet: zeros of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _normalize_set(arch_strs: Iterable[str]) -> frozenset[str]:
    if isinstance(arch_strs, str):
        raise TypeError("allowed_arch_strs is a collection of arch_str, not one string")
    return frozenset(normalize_arch_str(a) for a in arch_strs)


def __getattr__(name: str):
    if name == "NasBench201Space":
        return _define_space_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
