"""``LatencyPenalty``: latency-aware losses for differentiable NAS, from a latency table.

Forms (``E`` = expected latency in ms, ``ref`` = ``target_ms``):

==============  ==========================================================  ===================
form            loss                                                        defaults
==============  ==========================================================  ===================
``add#linear``  ``loss + strength * (E - ref) / ref``  (ProxylessNAS)       strength = 0.1
``mul#log``     ``alpha * loss * (log E / log ref) ** beta``  (ProxylessNAS) alpha=0.2, beta=0.3
``fbnet``       ``loss * alpha * log(E) ** beta``  (FBNet)                  alpha=0.2, beta=0.6
``hinge``       ``loss + strength * max(0, E / ref - 1)``                   strength = 1.0
==============  ==========================================================  ===================

``mul#log`` and ``fbnet`` take logarithms of milliseconds, as the papers do, so they need
latencies above 1 ms; for faster networks pass ``log_unit_ms`` (e.g. ``0.001`` takes logarithms
of microseconds) or use ``add#linear`` / ``hinge``. The constructor refuses a table whose fastest
architecture is not above one ``log_unit_ms``: the log would be negative and the loss vanish.

Use it as the ``penalty=`` of NNI's ``DARTS``, ``Proxyless`` or ``GumbelDARTS``: NNI passes
``export_probs()`` (plain floats without gradients), so the penalty finds the one-shot module
that calls it and differentiates through its architecture parameters; call ``bind(module)`` to
name the module yourself. In a plain training loop call ``penalty(loss, probs)`` with
``{label: probability tensor}`` or the supernet module.
"""
from __future__ import annotations

import math
import sys
import weakref
from typing import Any, Mapping

import torch
from torch import nn
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty

from .expected_latency import ExpectedLatency
from ..warn import warn

__all__ = ["LatencyPenalty", "PENALTY_FORMS"]

PENALTY_FORMS = ("add#linear", "mul#log", "fbnet", "hinge")
_DEFAULTS = {
    "add#linear": {"strength": 0.1},
    "mul#log": {"alpha": 0.2, "beta": 0.3},
    "fbnet": {"alpha": 0.2, "beta": 0.6},
    "hinge": {"strength": 1.0},
}


def _has_grad(probs: Any) -> bool:
    if not isinstance(probs, Mapping):
        return False
    for v in probs.values():
        if isinstance(v, torch.Tensor) and v.requires_grad:
            return True
        if isinstance(v, tuple) and any(isinstance(x, torch.Tensor) and x.requires_grad for x in v):
            return True
        if isinstance(v, Mapping) and any(isinstance(x, torch.Tensor) and x.requires_grad
                                          for x in v.values()):
            return True
    return False


class LatencyPenalty(ExpectationProfilerPenalty):
    """Latency penalty on a loss (see the module docstring for the forms).

    Pass it as the ``penalty=`` of NNI's ``DARTS``, ``Proxyless`` or ``GumbelDARTS``, or call
    ``penalty(loss, probs)`` in a training loop.

    Parameters
    ----------
    table : LatencyTable, LatencyProfiler, ExpectedLatency, str or path
        The latencies: a :class:`~nnmeter_nas.nni.LatencyTable` (usually
        ``LatencyProfiler(space, predictor).table``), a
        :class:`~nnmeter_nas.nni.LatencyProfiler`, an :class:`ExpectedLatency` or the path of a
        saved table.
    form : {"hinge", "add#linear", "mul#log", "fbnet"}, default="hinge"
        The penalty's formula (see the module docstring).
    target_ms : float, default=None
        The reference/target latency in ms (required by every form but ``fbnet``).
    strength, alpha, beta : float, default=None
        The forms' coefficients; None takes the published defaults (module docstring).
    device : str, default=None
        The table's device (default: its first).
    log_unit_ms : float, default=1.0
        Unit (ms) of the logarithms of ``mul#log`` and ``fbnet``.

    Examples
    --------
    A table with one choice point (``conv``: 2 ms as ``k3``, 4 ms as ``k5``) and 1 ms of fixed
    layers; with even odds the expected latency is 4 ms, a third over a 3 ms target:

    >>> import torch
    >>> from nnmeter_nas.nni import LatencyPenalty
    >>> from nnmeter_nas.nni.table import LatencyTable, TablePoint
    >>> point = TablePoint(name="conv", frozen_path="conv", kind="layer", labels=("conv",),
    ...                    combos=[("k3",), ("k5",)], ms=[[2.0], [4.0]], active=[True, True])
    >>> table = LatencyTable(devices=["a76"], input_shape=[1, 3, 32, 32], points=[point],
    ...                      space={"class": "Net", "labels": {"conv": ["k3", "k5"]}},
    ...                      fixed_ms={"a76": 1.0})
    >>> penalty = LatencyPenalty(table, "hinge", target_ms=3.0)
    >>> probs = {"conv": torch.tensor([0.5, 0.5], requires_grad=True)}
    >>> loss, details = penalty(torch.tensor(1.0), probs)
    >>> round(float(details["expected_latency_ms"]), 3), round(float(loss), 3)
    (4.0, 1.333)
    >>> loss.backward()                 # the gradient favours the faster k3
    >>> bool(probs["conv"].grad[0] < probs["conv"].grad[1])
    True
    """

    def __init__(self, table: Any, form: str = "hinge", *, target_ms: float | None = None,
                 strength: float | None = None, alpha: float | None = None,
                 beta: float | None = None, device: str | None = None,
                 log_unit_ms: float = 1.0) -> None:
        if form not in PENALTY_FORMS:
            raise ValueError(f"unknown latency penalty form {form!r}; choose one of {PENALTY_FORMS}")
        if form != "fbnet" and (target_ms is None or target_ms <= 0):
            raise ValueError(f"the {form!r} latency penalty needs target_ms > 0 (the reference "
                             "latency in ms)")
        if log_unit_ms <= 0:
            raise ValueError("log_unit_ms must be > 0")
        if form == "mul#log" and target_ms is not None and target_ms <= log_unit_ms:
            raise ValueError(f"'mul#log' divides by log(target_ms); target_ms={target_ms} ms must "
                             f"be above log_unit_ms={log_unit_ms} ms (pass e.g. "
                             "log_unit_ms=0.001, or use 'add#linear' or 'hinge')")
        defaults = _DEFAULTS[form]
        strength = defaults.get("strength", 1.0) if strength is None else strength
        alpha = defaults.get("alpha", 1.0) if alpha is None else alpha
        beta = defaults.get("beta", 1.0) if beta is None else beta
        expected = table if isinstance(table, ExpectedLatency) else ExpectedLatency(table, device)
        if form in ("mul#log", "fbnet"):
            fastest = expected.table.bounds(expected.device_name)[0]
            if fastest <= log_unit_ms:
                raise ValueError(
                    f"the {form!r} penalty takes log(latency / {log_unit_ms} ms), but the fastest "
                    f"architecture of the table takes {fastest:.4g} ms: the log would be <= 0 and "
                    f"the loss vanish. Pass log_unit_ms below {fastest:.3g} (e.g. 0.001 for "
                    "microseconds) or use 'add#linear' or 'hinge'")
        super().__init__(profiler=None, baseline=float(target_ms or 1.0),  # type: ignore[arg-type]
                         scale=float(strength if form in ("add#linear", "hinge") else alpha))
        self.expected = expected
        self.form = form
        self.target_ms = target_ms
        self.strength = float(strength)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.log_unit_ms = float(log_unit_ms)
        self._bound: weakref.ref | None = None
        self._warned_no_grad = False

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, target_ms={self.target_ms}, strength={self.strength}, "
                f"alpha={self.alpha}, beta={self.beta}, log_unit_ms={self.log_unit_ms}")

    # ------------------------------------------------------------------ binding to NNI
    def bind(self, module: nn.Module) -> "LatencyPenalty":
        """Take architecture probabilities from ``module``'s parameters (an NNI one-shot
        supernet or Lightning module) whenever the caller passes none with gradients."""
        self._bound = weakref.ref(module)
        return self

    def _find_caller(self) -> nn.Module | None:
        """The NNI one-shot module whose ``penalty`` is this object, from the call stack."""
        frame = sys._getframe(2)
        depth = 0
        while frame is not None and depth < 12:
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and owner is not self and \
                    getattr(owner, "penalty", None) is self:
                return owner
            frame = frame.f_back
            depth += 1
        return None

    def _probabilities(self, sample: Any) -> Any:
        if isinstance(sample, nn.Module):
            return sample
        if sample is not None and _has_grad(sample):
            return sample
        module = self._bound() if self._bound is not None else None
        if module is None:
            module = self._find_caller()
            if module is not None:
                self._bound = weakref.ref(module)
        if module is not None:
            from .expected_latency import architecture_probabilities

            probs = dict(sample or {})
            probs.update(architecture_probabilities(module))
            return probs
        if sample is None:
            raise ValueError("LatencyPenalty got no probabilities: pass {label: probabilities} "
                             "or bind(supernet) first")
        if not self._warned_no_grad:
            self._warned_no_grad = True
            warn("LatencyPenalty got architecture probabilities without gradients and "
                 "no module to take them from: the penalty changes the loss value but "
                 "not the architecture. Call penalty.bind(supernet).", RuntimeWarning)
        return sample

    # ------------------------------------------------------------------ the loss
    def expected_latency(self, probs: Any) -> torch.Tensor:
        """E[latency] in ms (0-d tensor) of ``probs`` (see :class:`ExpectedLatency`)."""
        return self.expected(self._probabilities(probs))

    def penalised(self, loss: torch.Tensor, latency: torch.Tensor) -> torch.Tensor:
        """Apply the form to ``loss`` given the (expected) latency in ms."""
        lat = latency.to(loss.dtype) if isinstance(loss, torch.Tensor) else latency
        if self.form == "add#linear":
            return loss + self.strength * (lat - self.target_ms) / self.target_ms
        if self.form == "hinge":
            return loss + self.strength * torch.relu(lat / self.target_ms - 1.0)
        unit = self.log_unit_ms
        if self.form == "mul#log":
            ratio = torch.log(lat / unit) / math.log(self.target_ms / unit)
            return self.alpha * loss * ratio.clamp_min(0.0) ** self.beta
        # fbnet
        return loss * self.alpha * torch.log(lat / unit).clamp_min(0.0) ** self.beta

    def forward(self, loss: torch.Tensor, sample: Any = None) -> tuple[torch.Tensor, dict]:
        """``(penalised loss, details)`` as NNI's ``ProfilerPenalty``; ``sample`` holds the
        architecture probabilities (or is NNI's ``export_probs()``)."""
        latency = self.expected_latency(sample)
        new_loss = self.penalised(loss, latency)
        details = {
            "loss_original": loss.detach() if isinstance(loss, torch.Tensor) else loss,
            "expected_latency_ms": latency.detach(),
            "penalty": (new_loss - loss).detach() if isinstance(loss, torch.Tensor) else new_loss,
            "loss_final": new_loss.detach(),
        }
        return new_loss, details

    def profile(self, sample: Any) -> float:  # NNI ProfilerPenalty API
        return float(self.expected_latency(sample))
