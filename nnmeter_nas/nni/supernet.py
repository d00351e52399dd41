"""Weight-sharing (SPOS) supernets with NNI 3: train once, score subnets with inherited weights.

The method of Single Path One-Shot (Guo et al., 2020) and of NNI's hardware-aware SPOS example:

1. train the supernet once, sampling one path uniformly at each step: NNI's ``RandomOneShot``
   strategy inside a ``NasExperiment`` (:func:`train_supernet`);
2. search with a multi-trial strategy in a second ``NasExperiment`` whose model space is
   :class:`SharedWeightsSpace` (the trained supernet): each trial's network is a subnet that
   shares the supernet's weights, so a candidate costs a batch-norm recalibration
   (:func:`recalibrate_batchnorm`) and a validation pass (:func:`inherited_accuracy`) instead of
   a training run;
3. train the best architecture found on its own.

What this module adds is what NNI 3.0 lacks for that workflow on spaces such as ShuffleNet/SPOS:

- NNI 3.0 turns every ``MutableConv2d`` into a mixed operation whose ``freeze`` fails on
  convolutions without bias (``Unexpected key(s) in state_dict: "bias"``), and with those layers
  kept as they are (:func:`keep_fixed_operations`) ``supernet.freeze(sample)`` rebuilds them with
  fresh random weights: nothing is inherited. :func:`shared_subnet` picks the sampled paths
  without copying or re-initialising anything (about a millisecond).
- batch-norm recalibration of a subnet.

Importing this module imports torch and NNI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

__all__ = ["keep_fixed_operations", "train_supernet", "shared_subnet", "SharedWeightsSpace",
           "recalibrate_batchnorm", "inherited_accuracy"]


def keep_fixed_operations(module: nn.Module, name: str, memo: dict, mutate_kwargs: dict) -> bool | None:
    """NNI one-shot mutation hook: leave a ``ParametrizedModule`` without choices (e.g. a
    ``MutableConv2d`` whose arguments are all plain numbers) as the plain layer it is.

    Pass it first in ``RandomOneShot(mutation_hooks=[keep_fixed_operations])``. Without it NNI
    3.0 wraps such layers in mixed operations, and ``supernet.freeze(sample)`` then raises
    ``Unexpected key(s) in state_dict: "bias"`` on every convolution built with ``bias=False``.
    """
    from nni.nas.nn.pytorch import ParametrizedModule

    if isinstance(module, ParametrizedModule) and not module.mutables:
        return True  # handled: keep the module, run no further hook on it
    return None


def train_supernet(model_space: nn.Module, evaluator: Any, *,
                   working_directory: str | Path | None = None,
                   filter: Callable[[dict], bool] | None = None) -> nn.Module:
    """Train ``model_space`` as a SPOS supernet with NNI's ``RandomOneShot`` (uniform
    single-path sampling) inside a ``NasExperiment``.

    Parameters
    ----------
    model_space : nni.nas.nn.pytorch.ModelSpace
        The space, e.g. :class:`~nnmeter_nas.search_spaces.SPOSSpace`; it is mutated and
        trained in place.
    evaluator : nni.nas.evaluator.pytorch.Lightning
        How to train, e.g. ``Classification(train_dataloaders=..., max_epochs=...)``.
    working_directory : str or Path, default=None
        NNI's experiment directory (default: NNI's, under ``~/nni-experiments``).
    filter : callable, default=None
        ``RandomOneShot(filter=...)``: paths it rejects are not trained (e.g. a
        :class:`~nnmeter_nas.nni.LatencyFilter` to train only paths within a budget).

    Returns
    -------
    nni.nas.nn.pytorch.ModelSpace
        The trained supernet (``model_space`` itself, its choices replaced by NNI's path-sampling
        layers). :func:`shared_subnet` takes a subnet out of it; :class:`SharedWeightsSpace`
        makes it the model space of a second ``NasExperiment`` that searches it.
    """
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import RandomOneShot

    strategy = RandomOneShot(filter=filter, mutation_hooks=[keep_fixed_operations])
    config = NasExperimentConfig("sequential", "raw")
    if working_directory is not None:
        config.experiment_working_directory = str(Path(working_directory).resolve())
    experiment = NasExperiment(model_space, evaluator, strategy, config)
    experiment.run()
    return strategy.supernet


def _is_choice(module: nn.Module) -> bool:
    return isinstance(module, LayerChoice)  # NNI's PathSamplingLayer is one too


def shared_subnet(supernet: nn.Module, sample: dict[str, Any]) -> nn.Module:
    """The subnet of ``supernet`` that ``sample`` picks, sharing the supernet's weights.

    Every ``LayerChoice`` (or NNI's one-shot ``PathSamplingLayer``) is replaced by its candidate
    ``sample[label]``; modules on the way to a choice are shallow copies, all other modules and
    every parameter and buffer are the supernet's own (training or recalibrating the subnet
    changes the supernet). The result has no choices left; its root is a shallow copy of the
    supernet's root module (same class).

    Parameters
    ----------
    supernet : torch.nn.Module
        A model space or a supernet trained by :func:`train_supernet`.
    sample : dict
        ``{label: value}`` for every choice of the space (e.g. ``layer_1``: ``"k5"``).

    Raises
    ------
    nnmeter_nas.nni.SampleError
        A choice's label is missing from ``sample`` or its value is not a candidate.
    """
    import copy

    from .errors import SampleError

    def pick(module: nn.Module, path: str) -> nn.Module:
        if _is_choice(module):
            label = module.label
            if label not in sample:
                raise SampleError(f"sample has no value for the choice {label!r} (module "
                                  f"{path or '<root>'}); it needs one for every choice")
            value = sample[label]
            names = list(module.names)
            if value not in names:
                raise SampleError(f"sample has {label}={value!r}; the candidates are {names}")
            return pick(module[value], path)
        replaced = {}
        for name, child in module.named_children():
            new = pick(child, f"{path}.{name}" if path else name)
            if new is not child:
                replaced[name] = new
        if not replaced:
            return module
        shallow = copy.copy(module)
        shallow._modules = type(module._modules)(module._modules)  # own child list, same children
        for name, new in replaced.items():
            shallow._modules[name] = new
        return shallow

    return pick(supernet, "")


class SharedWeightsSpace(ModelSpace):
    """A trained supernet as the model space of a multi-trial ``NasExperiment``.

    Its choices are the supernet's; ``freeze(sample)`` is :func:`shared_subnet`, so each
    trial's network inherits the supernet's weights (shared, not copied). Use the
    ``sequential`` execution engine with the ``raw`` model format (trials run one at a time
    in this process, on the same weights).

    Parameters
    ----------
    supernet : torch.nn.Module
        E.g. the result of :func:`train_supernet`.
    """

    def __init__(self, supernet: nn.Module) -> None:
        super().__init__()
        self.supernet = supernet

    def forward(self, x):
        raise RuntimeError("SharedWeightsSpace is a space: run shared_subnet(space.supernet, "
                           "sample) or space.freeze(sample)")

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return shared_subnet(self.supernet, sample)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every batch norm's running mean and variance of ``model`` on ``batches``.

    A subnet with weights inherited from a supernet carries running statistics averaged over
    all the paths the supernet trained, not its own; SPOS recomputes them on training batches
    before scoring a candidate. The statistics are reset and then averaged over the batches with
    equal weights (``momentum=None``); no weight changes. ``model`` is left in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        The subnet.
    batches : iterable of torch.Tensor
        Input batches (N, C, H, W) from the training data.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.eval()
    return model


@torch.no_grad()
def inherited_accuracy(model: nn.Module, calibration: Iterable[torch.Tensor],
                       x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy (0..1) of a subnet with inherited weights, after recalibrating its batch
    norms on ``calibration`` batches.

    Parameters
    ----------
    model : torch.nn.Module
        The subnet, e.g. ``shared_subnet(supernet, sample)``.
    calibration : iterable of torch.Tensor
        Training input batches for :func:`recalibrate_batchnorm`.
    x : torch.Tensor
        Validation inputs (N, C, H, W).
    y : torch.Tensor
        Their labels (N,).
    batch_size : int, default=512
        Validation batch size.
    """
    recalibrate_batchnorm(model, calibration)
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))
