"""The cost terms of each kernel type, and which coefficients they share.

Every term is a monomial with non-negative exponents in the quantities of
:mod:`nnmeter_nas.regressors.cost_model` (``area_out`` = output pixels, ``cin``, ``cout``,
``k2`` = kernel size squared, ``macs_1e6``...). A term's *key* names the coefficient it is
fitted with: keys shared by several kernel types (``elementwise:*``, ``pool:*``) give a type the
data never hold the cost of its family, while the type's own keys (``hswish:*``) add what it
costs beyond that (``>= 0``).

Convolution: launch + MACs per kernel-size class (1x1, 3x3, 5x5 and larger: their compute
efficiency differs) + ``MACs / cin`` and ``MACs / cout`` (thin layers run below peak: throughput
``T_max * c / (c + c0)``) + elements read and written + weights read.
"""
from __future__ import annotations

from ..regressors.cost_model import Term

_INF = float("inf")
#: Kernel-size classes of convolutions (feature 3 is ``k``).
_K_CLASSES = (("k1", (3, 0.0, 1.5)), ("k3", (3, 1.5, 3.5)), ("k5+", (3, 3.5, _INF)))


def _conv_terms(reg: str) -> list[tuple[str, Term]]:
    fam = "conv" if reg == "conv-bn-relu" else "dwconv"
    out = [(f"{reg}:launch", Term("launch", {})),
           (f"{fam}:macs", Term("macs", {"macs_1e6": 1}))]
    for name, gate in _K_CLASSES:
        # each kernel-size class may cost more per MAC than the shared rate (ridge: a class
        # few networks hold stays near the shared rate)
        out.append((f"excess:{reg}:macs_{name}", Term(f"macs_{name}", {"macs_1e6": 1}, gate)))
    if reg == "conv-bn-relu":
        out += [(f"{reg}:macs_per_cin", Term("macs_per_cin", {"area_out": 1, "k2": 1,
                                                               "cout": 1})),
                (f"{reg}:macs_per_cout", Term("macs_per_cout", {"area_out": 1, "k2": 1,
                                                                 "cin": 1})),
                (f"{reg}:params", Term("params", {"params_1e6": 1}))]
    out += [(f"{reg}:elements_in", Term("elements_in", {"area_in": 1, "cin": 1})),
            (f"{reg}:elements_out", Term("elements_out", {"area_out": 1, "cout": 1}))]
    return out


def _shared_elementwise(reg: str, area_c: dict) -> list[tuple[str, Term]]:
    return [("elementwise:launch", Term("launch", {})),
            ("elementwise:elements", Term("elements", area_c)),
            (f"{reg}:launch", Term("own_launch", {})),
            (f"{reg}:elements", Term("own_elements", area_c))]


#: Pure data-movement kernel types (a copy, with at most a trivial operation per element):
#: in the ``"memory"`` term set they share one bandwidth cost, ``memory:moved`` per element
#: read or written, instead of the element-wise family's.
MEMORY_TYPES = ("concat", "split", "channelshuffle", "bnrelu", "relu")

#: Term sets :func:`terms_of` knows (``DeviceLatencyFit(term_set=...)``):
#:
#: - ``"default"``: the shipped terms;
#: - ``"se-parts"``: a squeeze-and-excitation block costs as its parts, each priced with the
#:   coefficients of its own kernel type: a global average pooling (its launch and elements),
#:   two fully connected layers on the channel vector (two launches, ``c * c / 4`` weights
#:   each: ``c^2 / 2`` at the dense rate per MAC and the fully connected rate per weight) and
#:   the multiply (one element-wise pass), no term of its own;
#: - ``"se-parts-own"``: the same with the block's own launch and per-element excess;
#: - ``"memory"``: :data:`MEMORY_TYPES` share a bandwidth family (launch + elements moved,
#:   read plus written) instead of the element-wise one, whose arithmetic types (additions,
#:   h-swish, ...) then no longer set the cost of a copy;
#: - ``"memory-copies"``: the copies among them (concatenation, split, BN-ReLU, ReLU) cost
#:   the bandwidth family alone, with no term of their own; a channel shuffle (a transpose,
#:   strided reads) keeps the element-wise family and its own terms;
#: - ``"bandwidth"``: ``"memory-copies"``, and a pooling's elements read and written are
#:   priced at the same bandwidth (``memory:moved``) instead of the pooling family's own
#:   per-element rate (window reads and launches stay the pooling family's). The VPU's
#:   built-in fit (:data:`.builtin.DEVICE_FIT_PARAMS`); the others were tried there and not
#:   adopted (``benchmarks/four_devices_variants.py``, docs/four_devices.md, round 4);
#: - ``"shared-conv-launch"``: dense and depthwise convolutions share one launch
#:   (``conv:launch``: dispatching a kernel is the runtime's cost, not the operator's), and a
#:   depthwise convolution's own launch is an excess over it, ridge-penalised towards 0 like
#:   every type's own terms. The Adreno 630's built-in fit: with its own launch free, six
#:   mobile networks alone split a depthwise convolution's cost into launch and work, and the
#:   split swings with the network left out (51 -> 130 us without MobileNetV2; the dense
#:   launch is 2 us); tried on the other three devices and not adopted (docs/four_devices.md,
#:   round 6).
TERM_SETS = ("default", "se-parts", "se-parts-own", "memory", "memory-copies", "bandwidth",
             "shared-conv-launch")

#: Kernel types of :data:`MEMORY_TYPES` that ``"memory-copies"`` prices as plain copies.
COPY_TYPES = ("concat", "split", "bnrelu", "relu")


def _se_parts(own: bool) -> list[tuple[str, Term]]:
    area_c = {"area": 1, "c": 1}
    out = [("elementwise:launch", Term("launch", {}, scale=2.0)),      # pool read + multiply
           ("elementwise:elements", Term("elements", area_c, scale=2.0)),
           ("global-avgpool:launch", Term("pool_launch", {})),
           ("global-avgpool:elements", Term("pool_elements", area_c)),
           ("fc:launch", Term("fc_launch", {}, scale=2.0)),
           ("conv:macs", Term("fc_macs", {"c": 2}, scale=0.5e-6)),
           ("fc:weights", Term("fc_weights", {"c": 2}, scale=0.5e-6))]
    if own:
        out += [("se:launch", Term("own_launch", {})), ("se:elements", Term("own_elements",
                                                                             area_c))]
    return out


def _memory(reg: str, area_c: dict, own: bool = True) -> list[tuple[str, Term]]:
    out = [("memory:launch", Term("launch", {})),
           ("memory:moved", Term("moved", area_c, scale=2.0))]     # read + written
    if own:
        out += [(f"{reg}:launch", Term("own_launch", {})),
                (f"{reg}:elements", Term("own_elements", area_c))]
    return out


def terms_of(regressor: str, term_set: str = "default") -> list[tuple[str, Term]]:
    """``[(coefficient key, Term), ...]`` of a kernel type (registered quantities or the
    generic ``[area, c]``) in one of :data:`TERM_SETS`."""
    r = regressor
    if term_set not in TERM_SETS:
        raise ValueError(f"unknown term set {term_set!r} (known: {', '.join(TERM_SETS)})")
    if r == "se" and term_set in ("se-parts", "se-parts-own"):
        return _se_parts(term_set == "se-parts-own")
    if r in MEMORY_TYPES and term_set == "memory":
        return _memory(r, {"area": 1, "c_total": 1} if r == "concat" else {"area": 1, "c": 1})
    if r in COPY_TYPES and term_set in ("memory-copies", "bandwidth"):
        return _memory(r, {"area": 1, "c_total": 1} if r == "concat" else {"area": 1, "c": 1},
                       own=False)
    if r in ("conv-bn-relu", "dwconv-bn-relu"):
        out = _conv_terms(r)
        if term_set == "shared-conv-launch":
            out = [("conv:launch", t) if key == f"{r}:launch" else (key, t) for key, t in out]
            if r == "dwconv-bn-relu":
                out.append((f"excess:{r}:launch", Term("own_launch", {})))
        return out
    if r == "fc":
        # a fully connected layer streams each weight once (one MAC per weight, no reuse at
        # batch 1): launch + the dense convolutions' rate per MAC + its own rate per weight.
        # No term in cin or cout alone: on the Pixel 4 GPU the 18 distinct FC layers of
        # pixel4_ops_gpu.csv take 80-91 us per million weights whatever their shape, and a
        # per-output term let the fit charge VGG's 4096-wide layers (102M weights) to
        # AlexNet's (38M weights): +113 % on the Adreno 640 in leave-one-out, +3 % without.
        return [("fc:launch", Term("launch", {})), ("conv:macs", Term("macs", {"macs_1e6": 1})),
                ("fc:weights", Term("weights", {"macs_1e6": 1}))]
    if r in ("avgpool", "maxpool") and term_set == "bandwidth":
        out = [("memory:moved", Term("elements_in", {"area_in": 1, "cin": 1})),
               ("memory:moved", Term("elements_out", {"area_out": 1, "cout": 1}))]
        for prefix in ("pool", r):
            out += [(f"{prefix}:launch", Term("launch", {})),
                    (f"{prefix}:window", Term("window_reads", {"area_out": 1, "k2": 1,
                                                               "cout": 1}))]
        return out + [(f"{r}:elements_in", Term("own_elements_in", {"area_in": 1, "cin": 1}))]
    if r in ("avgpool", "maxpool"):
        out = []
        for prefix in ("pool", r):
            out += [(f"{prefix}:launch", Term("launch", {})),
                    (f"{prefix}:window", Term("window_reads", {"area_out": 1, "k2": 1,
                                                               "cout": 1})),
                    (f"{prefix}:elements_in", Term("elements_in", {"area_in": 1, "cin": 1}))]
        return out
    if r in ("add", "addrelu"):
        return (_shared_elementwise(r, {"area": 1, "c_sum": 1})
                + [(f"{r}:writes", Term("writes", {"area": 1, "c": 1}))])
    if r == "concat":
        return _shared_elementwise(r, {"area": 1, "c_total": 1})
    out = _shared_elementwise(r, {"area": 1, "c": 1})
    if r == "se":
        # squeeze-and-excitation: two small fully connected layers on the channel vector
        out.append(("se:channels2", Term("channels_squared", {"c": 2})))
    return out


def is_excess_key(key: str) -> bool:
    """True for a kernel type's own cost beyond its family's shared terms (fitted with a
    stronger ridge: a type seen in few networks stays close to its family)."""
    return key.startswith("excess:") or key.split(":", 1)[0] not in (
        "conv-bn-relu", "dwconv-bn-relu", "fc", "elementwise", "pool", "conv", "dwconv",
        "memory")


#: Smallest coefficient of the shared work terms, so that every kernel type's latency keeps
#: growing with its work however the data split the cost (no plateau by construction): a
#: dense or depthwise MAC at 2 TFLOP/s (1e-3 ms per 1e6 MACs), an element moved or a pooling
#: window read at 160 GB/s (8 bytes read + written, 5e-8 ms; ``memory:moved`` counts the read
#: and the write apart, 2.5e-8 ms each). Far above any device's peak, so the floors never bind
#: where the data speak, with one exception: the VPU's copies (term set ``"bandwidth"``) cost
#: next to nothing in every fit, and ``memory:moved`` sits at its floor there.
WORK_FLOORS: dict[str, float] = {"conv:macs": 1e-3, "dwconv:macs": 1e-3,
                                 "elementwise:elements": 5e-8, "pool:window": 5e-8,
                                 "memory:moved": 2.5e-8}


def floor_of(key: str) -> float:
    """Lower bound of a coefficient (0 for all but :data:`WORK_FLOORS`)."""
    return WORK_FLOORS.get(key, 0.0)
