"""The latency lookup table of a model space: fixed part + one latency per choice-point value.

``latency(sample) = fixed_ms + sum over choice points of ms[point][values of its labels]``

The table is a plain JSON file (``save``/``load``): the devices, the input shape, a signature of
the space (class, labels and values, choice points), the fixed part per device and, per choice
point, its labels, the input shape it sees and one entry per value combination. Lookups use
per-device dictionaries prepared once, so one ``latency(sample)`` costs a few microseconds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import SampleError, TableMismatchError
from .sample_values import hashable_value, jsonable_value

__all__ = ["LatencyTable", "TablePoint", "TABLE_FORMAT"]

TABLE_FORMAT = "nnmeter-nas-latency-table/1"


@dataclass
class TablePoint:
    """One choice point of a table. ``ms[k][d]`` is the latency (ms) of ``combos[k]`` on device
    ``d``; ``active[k]`` is False where the part is absent (a Repeat block beyond the depth)."""

    name: str
    frozen_path: str
    kind: str
    labels: tuple[str, ...]
    combos: list[tuple]
    ms: list[list[float]]
    active: list[bool]
    input_shape: list | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LatencyTable:
    """Latency lookup table of one model space on one or more devices (ms).

    Build one with :class:`~nnmeter_nas.nni.LatencyProfiler` (or
    :func:`~nnmeter_nas.nni.table_builder.build_latency_table`); load one with
    :meth:`LatencyTable.load`.
    """

    def __init__(self, *, devices: Sequence[str], input_shape: Sequence[int],
                 space: Mapping[str, Any], points: list[TablePoint],
                 fixed_ms: Mapping[str, float], meta: Mapping[str, Any] | None = None) -> None:
        self.devices = list(devices)
        if not self.devices:
            raise ValueError("a latency table needs at least one device")
        self.input_shape = [int(d) for d in input_shape]
        self.space = dict(space)
        self.points = points
        self.fixed_ms = {d: float(fixed_ms[d]) for d in self.devices}
        self.meta = dict(meta or {})
        self._labels = list(self.space.get("labels", {}))
        self._label_set = frozenset(self._labels)
        self._values = {label: {hashable_value(v) for v in vs}
                        for label, vs in self.space.get("labels", {}).items()}
        self._lookup: dict[str, tuple] = {}

    # ------------------------------------------------------------------ description
    @property
    def default_device(self) -> str:
        return self.devices[0]

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def space_class(self) -> str:
        return str(self.space.get("class", ""))

    @property
    def fingerprint(self) -> str:
        """Short hash of the space signature (class, labels, values, choice points)."""
        blob = json.dumps(self.space, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"LatencyTable(space={self.space_class!r}, devices={self.devices}, "
                f"input_shape={self.input_shape}, points={len(self.points)})")

    # ------------------------------------------------------------------ lookups
    def _device_index(self, device: str | None) -> int:
        if device is None:
            return 0
        try:
            return self.devices.index(device)
        except ValueError:
            raise TableMismatchError(
                f"the latency table of {self.space_class} has no device {device!r}; it was built "
                f"for {self.devices}. Build a table for that device (LatencyProfiler(space, "
                f"{device!r}, input_shape))") from None

    def _prepare(self, device: str) -> tuple:
        d = self._device_index(device)
        single = []
        multi = []
        for p in self.points:
            if len(p.labels) == 1:
                single.append((p.labels[0], {c[0]: row[d] for c, row in zip(p.combos, p.ms)}))
            elif len(p.labels) == 0:
                continue
            else:
                multi.append((p.labels, {c: row[d] for c, row in zip(p.combos, p.ms)}))
        constant = self.fixed_ms[device] + sum(p.ms[0][d] for p in self.points if not p.labels)
        prepared = (constant, tuple(single), tuple(multi), len(self._labels))
        self._lookup[device] = prepared
        return prepared

    def latency(self, sample: Mapping[str, Any], device: str | None = None) -> float:
        """Predicted latency (ms) of the architecture ``sample`` on ``device`` (default: the
        first device of the table). Raises :class:`SampleError` for a missing/unknown label or an
        unknown value."""
        device = device or self.devices[0]
        prepared = self._lookup.get(device) or self._prepare(device)
        constant, single, multi, n_labels = prepared
        total = constant
        try:
            for label, entries in single:
                total += entries[sample[label]]
            for labels, entries in multi:
                total += entries[tuple([sample[label] for label in labels])]
        except (KeyError, TypeError):
            return self._slow_latency(sample, device)
        if len(sample) != n_labels:
            self.check_sample(sample)
        return total

    def _slow_latency(self, sample: Mapping[str, Any], device: str) -> float:
        self.check_sample(sample)
        norm = {k: hashable_value(v) for k, v in sample.items()}
        constant, single, multi, _ = self._lookup[device]
        total = constant
        for label, entries in single:
            total += entries[norm[label]]
        for labels, entries in multi:
            total += entries[tuple(norm[label] for label in labels)]
        return total

    def latencies(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """``{device: ms}`` of ``sample`` on every device of the table."""
        return {d: self.latency(sample, d) for d in self.devices}

    __call__ = latencies

    def breakdown(self, sample: Mapping[str, Any], device: str | None = None) -> dict[str, float]:
        """``{"fixed": ms, point name: ms, ...}`` for ``sample`` on ``device``."""
        self.check_sample(sample)
        d = self._device_index(device)
        out = {"fixed": self.fixed_ms[self.devices[d]]}
        for p in self.points:
            combo = tuple(hashable_value(sample[label]) for label in p.labels)
            out[p.name] = p.ms[p.combos.index(combo)][d]
        return out

    def check_sample(self, sample: Mapping[str, Any]) -> None:
        """Raise :class:`SampleError` naming a missing/unknown label or an unknown value."""
        missing = [label for label in self._labels if label not in sample]
        if missing:
            raise SampleError(f"sample lacks labels {missing} of {self.space_class}; a sample "
                              f"needs all of {self._labels}")
        unknown = [label for label in sample if label not in self._label_set]
        if unknown:
            raise SampleError(f"sample has labels {unknown} that {self.space_class} does not "
                              f"have; its labels are {self._labels}")
        for label in self._labels:
            if hashable_value(sample[label]) not in self._values[label]:
                raise SampleError(
                    f"sample has {label}={sample[label]!r}, which is not a value of that label in "
                    f"{self.space_class}; the values are {self.space['labels'][label]}")

    def bounds(self, device: str | None = None) -> tuple[float, float]:
        """(lowest, highest) table latency over all samples, in ms. Exact when no label is shared
        by two choice points; otherwise a lower/upper bound."""
        d = self._device_index(device)
        lo = hi = self.fixed_ms[self.devices[d]]
        for p in self.points:
            col = [row[d] for row in p.ms]
            lo += min(col)
            hi += max(col)
        return lo, hi

    # ------------------------------------------------------------------ checks
    def check_space(self, signature: Mapping[str, Any], input_shape: Sequence[int] | None = None
                    ) -> None:
        """Raise :class:`TableMismatchError` if the table was built for another space or input."""
        mine, theirs = self.space, dict(signature)
        if mine.get("class") != theirs.get("class"):
            raise TableMismatchError(
                f"this latency table was built for {mine.get('class')}, not {theirs.get('class')}; "
                "build a table for this space")
        if mine.get("labels") != _roundtrip(theirs.get("labels")):
            a, b = set(mine.get("labels", {})), set(theirs.get("labels", {}))
            detail = (f"labels only in the table: {sorted(a - b)}, only in the space: "
                      f"{sorted(b - a)}" if a != b else "the labels' values differ")
            raise TableMismatchError(f"this latency table does not match the space "
                                     f"{theirs.get('class')} ({detail}); build a table for it")
        if _roundtrip(theirs.get("points")) != mine.get("points"):
            raise TableMismatchError(
                f"this latency table's choice points differ from those of {theirs.get('class')} "
                "(the space was built with other arguments); build a table for it")
        # tables saved before the digest existed have none: nothing to compare
        if mine.get("weights") and theirs.get("weights") and mine["weights"] != theirs["weights"]:
            raise TableMismatchError(
                f"this latency table was built for a {theirs.get('class')} whose layers have "
                "other sizes (same labels and choice points, other parameter shapes: e.g. "
                "another width multiplier or channel list); build a table for this space")
        if input_shape is not None and [int(x) for x in input_shape] != self.input_shape:
            raise TableMismatchError(
                f"this latency table was built for input shape {self.input_shape}, not "
                f"{list(input_shape)}; build a table for that input shape")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The table as a JSON-able dict (the file format of :meth:`save`)."""
        points = []
        for p in self.points:
            entries = []
            for combo, row, act in zip(p.combos, p.ms, p.active):
                entry = {"values": {label: jsonable_value(v) for label, v in zip(p.labels, combo)},
                         "ms": {dev: row[i] for i, dev in enumerate(self.devices)}}
                if not act:
                    entry["active"] = False
                entries.append(entry)
            points.append({"name": p.name, "frozen_path": p.frozen_path, "kind": p.kind,
                           "labels": list(p.labels), "input_shape": p.input_shape,
                           "entries": entries, **({"extra": p.extra} if p.extra else {})})
        return {
            "format": TABLE_FORMAT,
            "unit": "ms",
            "devices": self.devices,
            "input_shape": self.input_shape,
            "space": self.space,
            "fixed_ms": self.fixed_ms,
            "points": points,
            "meta": self.meta,
        }

    to_table = to_dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "LatencyTable":
        if data.get("format") != TABLE_FORMAT:
            raise TableMismatchError(f"{source} is not a latency table of format {TABLE_FORMAT} "
                                     f"(format field: {data.get('format')!r})")
        devices = list(data["devices"])
        points = []
        for p in data["points"]:
            labels = tuple(p["labels"])
            combos, ms, active = [], [], []
            for e in p["entries"]:
                combos.append(tuple(hashable_value(e["values"][label]) for label in labels))
                try:
                    ms.append([float(e["ms"][dev]) for dev in devices])
                except KeyError as exc:
                    raise TableMismatchError(f"{source}: entry {e['values']} of point "
                                             f"{p['name']!r} has no latency for device {exc}") from None
                active.append(bool(e.get("active", True)))
            points.append(TablePoint(p["name"], p.get("frozen_path", p["name"]), p.get("kind", ""),
                                     labels, combos, ms, active, p.get("input_shape"),
                                     dict(p.get("extra", {}))))
        return cls(devices=devices, input_shape=data["input_shape"], space=data["space"],
                   points=points, fixed_ms=data["fixed_ms"], meta=data.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise TableMismatchError(f"{path} is not a JSON latency table: {exc}") from None
        return cls.from_dict(data, source=str(path))

    # ------------------------------------------------------------------ arrays for torch
    def point_arrays(self, device: str | None = None) -> list[tuple[TablePoint, list[float]]]:
        """``[(point, [ms per combo])]`` for one device (used by ExpectedLatency)."""
        d = self._device_index(device)
        return [(p, [row[d] for row in p.ms]) for p in self.points]

    def values_of(self, label: str) -> list[Any]:
        return list(self.space["labels"][label])


def _roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    if obj is None:
        return None
    return json.loads(json.dumps(obj, default=str))
