"""A small physical cost model of a kernel configuration: the prior of the additive fit.

Each regressor belongs to a *family* that shares cost coefficients; a configuration's prior
latency is ``theta[family] . basis(config)`` with non-negative coefficients:

``conv`` (conv-bn-relu, dwconv-bn-relu, fc)
    ``[1, MACs / 1e6, (input + output elements) / 1e6, parameters / 1e6]``
``pool`` (avgpool, maxpool, global-avgpool)
    ``[1, window reads / 1e6, (input + output elements) / 1e6]``
``elementwise`` (relu, bn, bnrelu, add, addrelu and every other kernel type)
    ``[1, (input + output elements) / 1e6]``

The constant ``1`` is a per-kernel launch cost (ms). Whole-network measurements cannot tell
apart kernels that always occur together (NAS-Bench-201's stem, reduction blocks and
classifier occur once in every network; a cell operation occurs in all three stages together),
so this shared, smooth model decides how such a sum is split among them; it also gives the
latency of configurations that lie inside the fitted range but were never seen.
"""
from __future__ import annotations

import numpy as np

FAMILIES: dict[str, tuple[str, ...]] = {
    "conv": ("launch", "macs_1e6", "elements_1e6", "params_1e6"),
    "pool": ("launch", "window_reads_1e6", "elements_1e6"),
    "elementwise": ("launch", "elements_1e6"),
}

_CONV = ("conv-bn-relu", "dwconv-bn-relu", "fc")
_POOL = ("avgpool", "maxpool", "global-avgpool")


def family_of(regressor: str) -> str:
    """The cost family of a regressor name."""
    if regressor in _CONV:
        return "conv"
    if regressor in _POOL:
        return "pool"
    return "elementwise"


def basis(regressor: str, features) -> np.ndarray:
    """Basis vector of one configuration (the family's terms, in :data:`FAMILIES` order).

    ``features`` is the ``nnmeter-nas-1`` feature vector of the regressor.
    """
    f = [float(v) for v in features]
    fam = family_of(regressor)
    if regressor in ("conv-bn-relu", "dwconv-bn-relu"):
        hw, cin, cout, _k, s, flops_2e6, params_1e6 = f
        elems = (hw * hw * cin + (hw / s) ** 2 * cout) / 1e6
        return np.array([1.0, flops_2e6, elems, params_1e6])
    if regressor == "fc":
        cin, cout, flops_2e6, _ = f
        return np.array([1.0, flops_2e6, (cin + cout) / 1e6, cin * cout / 1e6])
    if regressor in ("avgpool", "maxpool"):
        hw, cin, cout, k, s = f
        out = (hw / s) ** 2 * cout
        return np.array([1.0, out * k * k / 1e6, (hw * hw * cin + out) / 1e6])
    if regressor == "global-avgpool":
        hw, cin = f
        return np.array([1.0, hw * hw * cin / 1e6, (hw * hw * cin + cin) / 1e6])
    assert fam == "elementwise"
    if regressor in ("add", "addrelu") and len(f) == 3:
        hw, c1, c2 = f
        return np.array([1.0, hw * hw * (c1 + c2 + max(c1, c2)) / 1e6])
    if regressor == "concat" and len(f) == 6:
        hw, _n, *cs = f
        return np.array([1.0, 2 * hw * hw * sum(cs) / 1e6])
    hw, c = f[0], f[1] if len(f) > 1 else 1.0
    return np.array([1.0, 2 * hw * hw * c / 1e6])


def correction_group(regressor: str, features) -> tuple:
    """Key of the configurations that share one correction to the cost model: same regressor
    and same shape *ratios* (kernel size, stride, output/input channels), differing only in
    resolution and width. NAS-Bench-201 repeats one cell in three stages (resolution halved,
    channels doubled), so whole-network latencies never separate such configurations; sharing
    their correction leaves the split between them to the cost model's scaling instead of to
    noise."""
    f = [float(v) for v in features]
    if regressor in ("conv-bn-relu", "dwconv-bn-relu"):
        _hw, cin, cout, k, s = f[:5]
        return (regressor, k, s, round(cout / max(cin, 1.0), 3))
    if regressor in ("avgpool", "maxpool"):
        return (regressor, f[3], f[4])
    if regressor == "fc":
        return (regressor, round(f[1] / max(f[0], 1.0), 3))
    return (regressor,)
