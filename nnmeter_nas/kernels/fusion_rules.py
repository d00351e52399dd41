"""Fusion rules in nn-Meter's ``fusion_rules.json`` format.

A file maps rule names to ``{"obey": bool, ...}`` (extra keys such as measured latencies are
kept but not used). ``BF_<a>_<b>`` says operator ``a`` followed by ``b`` runs as one kernel;
``BF_<a>_<b>_<c>...`` names a chain that is fused as one block; ``MON`` (0 or 1) says whether a
node with several consumers may fuse (0: never, nn-Meter's default); ``FN`` is kept for
compatibility. The multi-operator blocks ``se``, ``hswish``, ``channelshuffle`` and ``gap`` are
always detected (nn-Meter does the same).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import PackageError

MULTIOP_BLOCKS = ("se", "hswish", "channelshuffle", "gap")

# Used when a caller gives no rules: the pairs nn-Meter found fusible on all four of its
# devices for the common mobile-CNN operators.
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    f"BF_{a}_{b}": {"obey": True}
    for a, b in [("conv", "bn"), ("conv", "relu"), ("dwconv", "bn"), ("dwconv", "relu"),
                 ("bn", "relu"), ("add", "relu"), ("fc", "relu")]
}


@dataclass
class FusionRules:
    """Parsed fusion rules. ``rules`` is the raw mapping, written back unchanged by
    :meth:`to_dict`."""

    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()
        self.chains: list[tuple[str, ...]] = []
        for name, rule in self.rules.items():
            if not isinstance(rule, Mapping) or "obey" not in rule:
                raise PackageError(f"fusion rule {name!r} must be an object with an 'obey' "
                                   "entry")
            # A string such as "false" is truthy: it would fuse what the file says not to.
            if not isinstance(rule["obey"], (bool, int)) or rule["obey"] not in (0, 1):
                raise PackageError(f"fusion rule {name!r}: 'obey' is {rule['obey']!r}; it must "
                                   "be true or false (nn-Meter writes JSON booleans; MON takes "
                                   "0 or 1)")
            if name.startswith("BF_") and rule["obey"]:
                ops = tuple(name.split("_")[1:])
                if len(ops) == 2:
                    self.pairs.add(ops)  # type: ignore[arg-type]
                elif len(ops) > 2:
                    self.chains.append(ops)
        mon = self.rules.get("MON", {}).get("obey")
        self.mon = 0 if mon is None else int(mon)

    @classmethod
    def default(cls) -> "FusionRules":
        return cls(dict(DEFAULT_RULES))

    @classmethod
    def from_dict(cls, rules: Mapping[str, Any]) -> "FusionRules":
        if not isinstance(rules, Mapping):
            raise PackageError("fusion rules must be a JSON object {rule_name: {\"obey\": "
                               f"bool}}, got a {type(rules).__name__}")
        return cls({k: dict(v) if isinstance(v, Mapping) else v for k, v in rules.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> "FusionRules":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PackageError(f"fusion rules file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PackageError(f"{path}: not a valid fusion_rules.json: {exc}") from exc
        if not isinstance(data, dict):
            raise PackageError(f"{path}: fusion_rules.json must hold a JSON object")
        try:
            return cls.from_dict(data)
        except PackageError as exc:
            raise PackageError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.rules.items()}

    def is_fusible(self, op: str, next_op: str) -> bool:
        return (op, next_op) in self.pairs
