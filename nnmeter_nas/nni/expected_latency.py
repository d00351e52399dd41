"""Differentiable expected latency of an architecture distribution, from a latency table.

With independent categorical distributions ``P_l`` over each label's values,

``E[latency] = fixed + sum over choice points p of sum over combos c of prod_l P_l(c_l) * ms[p][c]``

(exact by linearity of expectation, even when two choice points share a label). The
probabilities may be given as

- ``{label: tensor}``: a probability vector in the order of ``table.values_of(label)``;
- ``{label: {value: probability}}``: NNI's ``export_probs()`` format (floats or tensors);
- ``{label: value}``: a fixed choice (one-hot);
- an ``nn.Module`` (an NNI DARTS/Proxyless/GumbelDARTS supernet or the one-shot Lightning module):
  the softmax of its architecture parameters, see :func:`architecture_probabilities`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import SampleError
from .sample_values import hashable_value
from .table import LatencyTable

__all__ = ["ExpectedLatency", "architecture_probabilities"]


def architecture_probabilities(module: nn.Module) -> dict[str, tuple[list[Any], torch.Tensor]]:
    """``{label: (values, softmax(alpha))}`` of the architecture parameters of an NNI 3 one-shot
    supernet (DARTS, GumbelDARTS, Proxyless mixed layers, mixed operations and repeats), with
    gradients to the parameters. GumbelDARTS's noise is not applied: this is the distribution the
    parameters define."""
    from nni.mutable import Categorical
    from nni.nas.nn.pytorch import Repeat

    out: dict[str, tuple[list[Any], torch.Tensor]] = {}
    for m in module.modules():
        alpha = m.__dict__.get("_parameters", {}).get("_arch_alpha")
        if alpha is None:
            alpha = getattr(m, "_arch_alpha", None)
        if alpha is None:
            continue
        if isinstance(alpha, torch.Tensor):
            label, names = getattr(m, "label", None), getattr(m, "names", None)
            if names is None and isinstance(getattr(m, "n_candidates", None), int):
                names = list(range(m.n_candidates))  # a mixed InputChoice: alpha over its inputs
            if label is not None and names is not None and label not in out:
                out[label] = (list(names), torch.softmax(alpha, dim=-1))
        elif isinstance(alpha, (nn.ParameterDict, dict)):
            spec_owner = m.depth_choice if isinstance(m, Repeat) else m
            try:
                spec = spec_owner.simplify()
            except Exception:  # not a mutable: nothing we can name
                continue
            for name, a in alpha.items():
                mutable = spec.get(name)
                if isinstance(mutable, Categorical) and name not in out:
                    out[name] = (list(mutable.values), torch.softmax(a, dim=-1))
    return out


class ExpectedLatency(nn.Module):
    """Maps architecture probabilities to expected latency (ms, a 0-d tensor with gradients).

    Parameters
    ----------
    table : LatencyTable, LatencyProfiler, str or path
        A :class:`LatencyTable`, a :class:`~nnmeter_nas.nni.LatencyProfiler` or a table path.
    device : str, default=None
        The table's device to use (default: its first).
    """

    def __init__(self, table: Any, device: str | None = None) -> None:
        super().__init__()
        if hasattr(table, "table") and isinstance(table.table, LatencyTable):
            table = table.table
        if not isinstance(table, LatencyTable):
            table = LatencyTable.load(table)
        self.table = table
        self.device_name = device or table.default_device
        self.labels = table.labels
        self._values = {label: [hashable_value(v) for v in table.values_of(label)]
                        for label in self.labels}
        self._value_index = {label: {v: i for i, v in enumerate(vs)}
                             for label, vs in self._values.items()}
        # An InputChoice choosing one input: the table's values are [[0], [1], ...] while NNI's
        # one-shot strategies give probabilities per input index (export_probs: {0: p, 1: q})
        self._one_input = {label: all(isinstance(v, tuple) and len(v) == 1 for v in vs)
                           for label, vs in self._values.items()}
        self.register_buffer("fixed_ms", torch.tensor(table.fixed_ms[self.device_name],
                                                      dtype=torch.float64))
        self._points: list[tuple[str, tuple[str, ...]]] = []
        for i, (point, col) in enumerate(table.point_arrays(self.device_name)):
            self.register_buffer(f"ms_{i}", torch.tensor(col, dtype=torch.float64))
            for j, label in enumerate(point.labels):
                idx = [self._value_index[label][combo[j]] for combo in point.combos]
                self.register_buffer(f"idx_{i}_{j}", torch.tensor(idx, dtype=torch.long))
            self._points.append((point.name, point.labels))

    def extra_repr(self) -> str:
        return f"device={self.device_name!r}, points={len(self._points)}"

    # ------------------------------------------------------------------ inputs
    def _key(self, label: str, value: Any) -> Any:
        """``value`` as a key of the label's table values (an input index ``k`` of a
        one-input InputChoice is its value ``[k]``)."""
        key = hashable_value(value)
        if (key not in self._value_index[label] and self._one_input[label]
                and (key,) in self._value_index[label]):
            return (key,)
        return key

    def _vector(self, label: str, given: Any, like: torch.Tensor | None) -> torch.Tensor:
        values = self._values[label]
        n = len(values)
        dtype = like.dtype if like is not None else torch.float64
        dev = like.device if like is not None else self.fixed_ms.device
        if isinstance(given, tuple) and len(given) == 2 and isinstance(given[1], torch.Tensor):
            names, probs = given
            order = []
            for v in values:
                try:
                    order.append([self._key(label, x) for x in names].index(v))
                except ValueError:
                    raise SampleError(f"the probabilities of {label!r} have no entry for value "
                                      f"{v!r} (they cover {names})") from None
            return probs[torch.tensor(order, device=probs.device)]
        if isinstance(given, torch.Tensor) and given.dim() == 1:
            if given.numel() != n:
                raise SampleError(f"probability vector of {label!r} has {given.numel()} entries; "
                                  f"the label has {n} values {self.table.values_of(label)}")
            return given
        if isinstance(given, Mapping):
            unknown = [v for v in given if self._key(label, v) not in self._value_index[label]]
            if unknown:
                raise SampleError(f"probabilities of {label!r} name unknown values {unknown}; the "
                                  f"values are {self.table.values_of(label)}")
            parts = []
            for v in values:
                p = next((given[k] for k in given if self._key(label, k) == v), 0.0)
                parts.append(p if isinstance(p, torch.Tensor) else torch.tensor(float(p)))
            return torch.stack([p.to(dtype=dtype, device=dev).reshape(()) for p in parts])
        key = self._key(label, given)
        if key in self._value_index[label]:
            one_hot = torch.zeros(n, dtype=dtype, device=dev)
            one_hot[self._value_index[label][key]] = 1.0
            return one_hot
        raise SampleError(f"cannot read a distribution of {label!r} from {given!r}; give a "
                          f"probability vector over {self.table.values_of(label)}, a "
                          "{value: probability} dict or one value")

    def probabilities(self, probs: Any) -> dict[str, torch.Tensor]:
        """The probability vector of every label, in the table's value order."""
        if isinstance(probs, nn.Module):
            probs = architecture_probabilities(probs)
        missing = [label for label in self.labels if label not in probs]
        if missing:
            raise SampleError(f"no probabilities for labels {missing} of the latency table of "
                              f"{self.table.space_class}")
        like = next((v for v in probs.values() if isinstance(v, torch.Tensor)
                     and v.is_floating_point()), None)
        if like is None:
            like = next((v[1] for v in probs.values() if isinstance(v, tuple) and len(v) == 2
                         and isinstance(v[1], torch.Tensor)), None)
        return {label: self._vector(label, probs[label], like) for label in self.labels}

    # ------------------------------------------------------------------ forward
    def forward(self, probs: Any) -> torch.Tensor:
        vectors = self.probabilities(probs)
        dtype = next(iter(vectors.values())).dtype if vectors else torch.float64
        if not dtype.is_floating_point:
            dtype = torch.float64
        total = self.fixed_ms.to(dtype)
        for i, (_, labels) in enumerate(self._points):
            weight = None
            for j, label in enumerate(labels):
                p = vectors[label].to(dtype)[getattr(self, f"idx_{i}_{j}")]
                weight = p if weight is None else weight * p
            ms = getattr(self, f"ms_{i}").to(dtype)
            total = total + (ms[0] if weight is None else (weight * ms).sum())
        return total
