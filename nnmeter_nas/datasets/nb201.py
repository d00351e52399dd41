"""NAS-Bench-201 tabular benchmark: CIFAR-10 accuracy and measured latency on nn-Meter's four devices.

The data live beside the repository in ``../shared/data/nb201_four_devices/`` (relative to the
repository root); the environment variable ``NNMETER_NAS_NB201_DATA`` points elsewhere. Files:

- ``architectures.csv``: ``nb201_index, arch_str, cifar10_acc`` (accuracy in percent).
- ``latency_train.csv``: ``nb201_index, device, latency_ms`` (whole-model latency in milliseconds
  of the C=16, N=5 network on a 1x3x32x32 input).

Cell notation (NAS-Bench-201 ``arch_str``)::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

The ``k``-th ``+``-separated group lists the edges into node ``k+1``; ``op~j`` is the operation on
the edge from node ``j``. :data:`NB201_EDGES` fixes the order of the six edges used everywhere in
nnmeter_nas (the order in which they appear in the string).

Only the :mod:`csv` module and numpy are used (no pandas).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np

from ..errors import NnMeterNasError

__all__ = [
    "NB201_OPS",
    "NB201_EDGES",
    "NB201_DEVICES",
    "DATA_ENV_VAR",
    "NB201DataError",
    "ArchStrError",
    "NB201Arch",
    "MeasuredRows",
    "NB201Table",
    "default_data_dir",
    "parse_arch_str",
    "format_arch_str",
    "normalize_arch_str",
    "live_edges",
]

#: Operation names of NAS-Bench-201, in the benchmark's own order.
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: The six cell edges as ``(from_node, to_node)``, in ``arch_str`` order.
NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))

#: nn-Meter's four devices, in the order the README lists them.
NB201_DEVICES: tuple[str, ...] = (
    "cortexA76cpu_tflite21",
    "adreno640gpu_tflite21",
    "adreno630gpu_tflite21",
    "myriadvpu_openvino2019r2",
)

_OPS_SET = frozenset(NB201_OPS)
_ARCH_TEMPLATE = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"

#: Environment variable that overrides the data directory.
DATA_ENV_VAR = "NNMETER_NAS_NB201_DATA"

_ARCH_FILE = "architectures.csv"
_DEFAULT_LATENCY_FILES = ("latency_train.csv",)

ArchKey = Union[int, np.integer, str]


class NB201DataError(NnMeterNasError, OSError):
    """The NAS-Bench-201 data directory or one of its files is missing or malformed."""


class ArchStrError(NnMeterNasError, ValueError):
    """A string is not a valid NAS-Bench-201 cell (``arch_str``) or names an unknown cell."""


# ----------------------------------------------------------------------------- arch_str helpers

def parse_arch_str(arch_str: str) -> tuple[str, ...]:
    """Split a NAS-Bench-201 ``arch_str`` into its six operations, in :data:`NB201_EDGES` order.

    >>> parse_arch_str("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    ('nor_conv_3x3', 'none', 'skip_connect', 'avg_pool_3x3', 'none', 'nor_conv_1x1')

    Raises :class:`ArchStrError` naming the faulty part when the string is malformed.
    """
    if not isinstance(arch_str, str):
        raise ArchStrError(f"arch_str must be a str like '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', "
                           f"got {type(arch_str).__name__}: {arch_str!r}")
    groups = arch_str.strip().split("+")
    if len(groups) != 3:
        raise ArchStrError(f"arch_str {arch_str!r} has {len(groups)} '+'-separated node groups; a "
                           "NAS-Bench-201 cell has 3: '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        tokens = [t for t in group.strip().strip("|").split("|")]
        if len(tokens) != node:
            raise ArchStrError(f"arch_str {arch_str!r}: node {node} needs {node} incoming edge(s), "
                               f"its group {group!r} has {len(tokens)}")
        for src, token in enumerate(tokens):
            op, sep, idx = token.strip().partition("~")
            if not sep or idx != str(src):
                raise ArchStrError(f"arch_str {arch_str!r}: edge token {token!r} into node {node} should "
                                   f"read 'op~{src}'")
            if op not in NB201_OPS:
                raise ArchStrError(f"arch_str {arch_str!r}: unknown operation {op!r}; NAS-Bench-201 "
                                   f"operations are {', '.join(NB201_OPS)}")
            ops.append(op)
    return tuple(ops)


def format_arch_str(ops: Sequence[str] | Mapping[tuple[int, int], str]) -> str:
    """Build the ``arch_str`` of a cell from its six operations.

    ``ops`` is either a sequence in :data:`NB201_EDGES` order or a mapping ``(from, to) -> op``.
    """
    if isinstance(ops, Mapping):
        missing = [e for e in NB201_EDGES if e not in ops]
        if missing:
            raise ArchStrError(f"cell operations miss edge(s) {missing}; all of {list(NB201_EDGES)} are needed")
        seq = [ops[e] for e in NB201_EDGES]
    else:
        seq = list(ops)
    if len(seq) != len(NB201_EDGES):
        raise ArchStrError(f"a NAS-Bench-201 cell has {len(NB201_EDGES)} edges, got {len(seq)} operations: {seq}")
    for op in seq:
        if op not in _OPS_SET:
            raise ArchStrError(f"unknown operation {op!r}; NAS-Bench-201 operations are {', '.join(NB201_OPS)}")
    return _ARCH_TEMPLATE.format(*seq)


def normalize_arch_str(arch_str: str) -> str:
    """Canonical spelling of an ``arch_str`` (whitespace removed, validated)."""
    return format_arch_str(parse_arch_str(arch_str))


# ----------------------------------------------------------------------------- data location


def live_edges(ops: Iterable[str]) -> list[tuple[int, int, str]]:
    """The edges ``(src, dst, op)`` a deployed cell computes: not ``none``, reachable from node 0
    and leading to node 3. ``ops`` are the six operations in :data:`NB201_EDGES` order. The one
    home of this rule: the network builder (:mod:`nnmeter_nas.search_spaces.nasbench201`) and
    the direct graph builder (:mod:`nnmeter_nas.fitting.nb201_graphs`) both use it."""
    edges = [(s, d, op) for (s, d), op in zip(NB201_EDGES, ops) if op != "none"]
    reach = {0}
    for s, d, _ in edges:  # edges are in topological order of dst
        if s in reach:
            reach.add(d)
    useful = {3}
    for s, d, _ in reversed(edges):
        if d in useful:
            useful.add(s)
    return [(s, d, op) for s, d, op in edges if s in reach and d in useful]


def default_data_dir() -> Path:
    """Directory of the NAS-Bench-201 data: ``$NNMETER_NAS_NB201_DATA`` if set, otherwise
    ``<repository root>/../shared/data/nb201_four_devices``. The directory may not exist."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data" / "nb201_four_devices"


# ----------------------------------------------------------------------------- table

@dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell: its benchmark index, ``arch_str`` and CIFAR-10 accuracy (percent)."""

    index: int
    arch_str: str
    cifar10_acc: float


class MeasuredRows(NamedTuple):
    """The cells measured on one device, sorted by NAS-Bench-201 index.

    ``indices`` int64 (n,), ``arch_strs`` tuple of n strings, ``accuracy`` float64 (n,) in percent,
    ``latency_ms`` float64 (n,) in milliseconds.
    """

    device: str
    indices: np.ndarray
    arch_strs: tuple[str, ...]
    accuracy: np.ndarray
    latency_ms: np.ndarray


class NB201Table:
    """NAS-Bench-201 accuracy table joined with measured latencies (read-only).

    Use :meth:`load`. Cells are looked up by NAS-Bench-201 index (``int``) or by ``arch_str``.

    Attributes
    ----------
    archs
        All cells with an accuracy, as :class:`NB201Arch`, sorted by index.
    devices
        Devices that have at least one measured latency.
    source
        The directory the table was read from (``None`` when built in memory).
    """

    def __init__(self, archs: Iterable[NB201Arch],
                 latencies: Mapping[int, Mapping[str, float]],
                 source: Path | None = None) -> None:
        self.archs: tuple[NB201Arch, ...] = tuple(sorted(archs, key=lambda a: a.index))
        self.source = source
        self._by_index: dict[int, NB201Arch] = {}
        self._by_str: dict[str, NB201Arch] = {}
        for a in self.archs:
            if a.index in self._by_index:
                raise NB201DataError(f"NAS-Bench-201 index {a.index} appears twice in {source or 'the table'}")
            self._by_index[a.index] = a
            self._by_str[a.arch_str] = a
        self._lat: dict[int, dict[str, float]] = {}
        for idx, per_dev in latencies.items():
            idx = int(idx)
            if idx not in self._by_index:
                raise NB201DataError(f"latency given for NAS-Bench-201 index {idx}, which has no row in "
                                     f"{_ARCH_FILE} ({source or 'in-memory table'})")
            self._lat[idx] = {str(d): float(v) for d, v in per_dev.items()}
        seen = {d for per_dev in self._lat.values() for d in per_dev}
        self.devices: tuple[str, ...] = tuple([d for d in NB201_DEVICES if d in seen]
                                              + sorted(seen - set(NB201_DEVICES)))

    # -- loading
    @classmethod
    def load(cls, data_dir: str | os.PathLike | None = None,
             latency_files: Sequence[str] = _DEFAULT_LATENCY_FILES) -> "NB201Table":
        """Read ``architectures.csv`` and the latency files from ``data_dir``
        (default :func:`default_data_dir`).

        Raises :class:`NB201DataError` naming the path and ``NNMETER_NAS_NB201_DATA`` when the
        directory or a file is missing, and naming file and line when a row is malformed.
        """
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        hint = (f"Point the environment variable {DATA_ENV_VAR} at the directory holding "
                f"{_ARCH_FILE} and {', '.join(latency_files)}")
        if not root.is_dir():
            raise NB201DataError(f"NAS-Bench-201 data directory not found: {root}. {hint} "
                                 "(default: ../shared/data/nb201_four_devices/ beside the repository).")
        arch_path = root / _ARCH_FILE
        archs = [NB201Arch(int(r["nb201_index"]), normalize_arch_str(r["arch_str"]), float(r["cifar10_acc"]))
                 for r in _read_rows(arch_path, ("nb201_index", "arch_str", "cifar10_acc"), hint)]
        latencies: dict[int, dict[str, float]] = {}
        for name in latency_files:
            for r in _read_rows(root / name, ("nb201_index", "device", "latency_ms"), hint):
                ms = float(r["latency_ms"])
                if not math.isfinite(ms) or ms <= 0:
                    raise NB201DataError(f"{root / name}: latency {r['latency_ms']!r} of index "
                                         f"{r['nb201_index']} on {r['device']} is not a positive number")
                latencies.setdefault(int(r["nb201_index"]), {})[r["device"]] = ms
        return cls(archs, latencies, source=root)

    # -- lookups
    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, key: object) -> bool:
        try:
            self.arch(key)  # type: ignore[arg-type]
        except (ArchStrError, TypeError):
            return False
        return True

    def arch(self, key: ArchKey) -> NB201Arch:
        """The cell with this NAS-Bench-201 index or ``arch_str``; :class:`ArchStrError` if absent."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            try:
                return self._by_index[int(key)]
            except KeyError:
                raise ArchStrError(f"NAS-Bench-201 index {int(key)} is not in the table "
                                   f"({len(self)} cells with accuracy >= 90% in {self.source})") from None
        if isinstance(key, str):
            found = self._by_str.get(key)
            if found is None:
                found = self._by_str.get(normalize_arch_str(key))
            if found is None:
                raise ArchStrError(f"cell {key!r} is not in the table ({len(self)} cells in {self.source})")
            return found
        raise TypeError(f"look cells up by NAS-Bench-201 index (int) or arch_str (str), got {type(key).__name__}")

    def accuracy(self, key: ArchKey) -> float:
        """CIFAR-10 accuracy (percent) of a cell."""
        return self.arch(key).cifar10_acc

    def latency(self, key: ArchKey, device: str) -> float | None:
        """Measured latency (ms) of a cell on ``device``; ``None`` when that cell was not measured
        there. Unknown devices raise :class:`KeyError` naming the known ones."""
        self._check_device(device)
        return self._lat.get(self.arch(key).index, {}).get(device)

    def latencies(self, key: ArchKey) -> dict[str, float]:
        """All measured latencies (ms) of a cell, ``{device: ms}`` (empty if never measured)."""
        return dict(self._lat.get(self.arch(key).index, {}))

    def measured(self, device: str) -> MeasuredRows:
        """The cells measured on ``device`` with accuracy and latency, sorted by index."""
        self._check_device(device)
        rows = [(i, self._by_index[i], lat[device]) for i, lat in sorted(self._lat.items()) if device in lat]
        return MeasuredRows(
            device=device,
            indices=np.array([r[0] for r in rows], dtype=np.int64),
            arch_strs=tuple(r[1].arch_str for r in rows),
            accuracy=np.array([r[1].cifar10_acc for r in rows], dtype=np.float64),
            latency_ms=np.array([r[2] for r in rows], dtype=np.float64),
        )

    def measured_on_all(self, devices: Sequence[str] | None = None) -> list[NB201Arch]:
        """Cells measured on every one of ``devices`` (default: all devices), sorted by index."""
        devs = list(self.devices if devices is None else devices)
        for d in devs:
            self._check_device(d)
        return [self._by_index[i] for i, lat in sorted(self._lat.items()) if all(d in lat for d in devs)]

    def latency_matrix(self, devices: Sequence[str] | None = None) -> tuple[list[NB201Arch], np.ndarray]:
        """Cells measured on all ``devices`` and their latencies as a float64 array (n, len(devices)) in ms."""
        devs = list(self.devices if devices is None else devices)
        cells = self.measured_on_all(devs)
        mat = np.array([[self._lat[a.index][d] for d in devs] for a in cells], dtype=np.float64)
        return cells, mat.reshape(len(cells), len(devs))

    def _check_device(self, device: str) -> None:
        if device not in self.devices:
            raise KeyError(f"no latency measured on device {device!r}; the table has {list(self.devices)}")

    def __repr__(self) -> str:
        return f"NB201Table({len(self)} cells, {len(self._lat)} measured, devices={list(self.devices)})"


def _read_rows(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise NB201DataError(f"NAS-Bench-201 data file not found: {path}. {hint}.")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise NB201DataError(f"{path}: missing column(s) {missing}; expected {list(columns)}, found {header}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if any(row.get(c) in (None, "") for c in columns):
                raise NB201DataError(f"{path}, line {line}: empty field in {dict(row)}")
            rows.append(row)
    try:
        for line, row in enumerate(rows, start=2):
            int(row[columns[0]])
    except ValueError:
        raise NB201DataError(f"{path}, line {line}: {columns[0]} {row[columns[0]]!r} is not an integer") from None
    return rows
