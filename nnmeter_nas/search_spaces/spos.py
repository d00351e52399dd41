"""The Single Path One-Shot (SPOS) ShuffleNetV2 search space, built on NNI's ``ShuffleNetSpace``.

20 choice blocks labelled ``layer_1`` .. ``layer_20``, each one of ``k3``, ``k5``, ``k7``
(ShuffleNetV2 block with that depthwise kernel size) or ``xcep`` (the Xception-like block with
three depthwise 3x3 convs): 4**20 architectures.

Two input sizes:

- the ImageNet space at 224x224 (``SPOSSpace()``, input ``(1, 3, 224, 224)``), NNI's space as is;
- a small-input variant for quick demos (``SPOSSpace(small_input=True)``, input
  ``(1, 3, 32, 32)``, 10 classes): the stem convolution has stride 1 instead of 2, so the four
  stages run at 16x16, 8x8, 4x4 and 2x2. The choice labels and values are the same.

``width_mult`` scales every layer's channels (e.g. 0.25 for a proxy network that trains in
seconds on a CPU); the choice labels and values do not change, so an architecture found on a
narrow small-input proxy is the same architecture as the 224x224 full-width network.

``SPOS_PUBLISHED_ARCH`` is the architecture published by the SPOS authors (the one NNI ships as
``ShuffleNetSpace.load_searched_model('spos')``).

Importing this module imports torch and NNI.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn
from nni.nas.hub.pytorch import ShuffleNetSpace

__all__ = [
    "SPOSSpace",
    "SPOS_LABELS",
    "SPOS_VALUES",
    "SPOS_PUBLISHED_ARCH",
    "SPOS_INPUT_SHAPE",
    "SPOS_SMALL_INPUT_SHAPE",
    "spos_space",
    "spos_published_model",
    "spos_random_sample",
    "align_candidates",
]

SPOS_LABELS: tuple[str, ...] = tuple(f"layer_{i}" for i in range(1, 21))
SPOS_VALUES: tuple[str, ...] = ("k3", "k5", "k7", "xcep")
SPOS_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 224, 224)
SPOS_SMALL_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)

# The searched architecture of the SPOS paper, as NNI publishes it.
SPOS_PUBLISHED_ARCH: dict[str, str] = {
    "layer_1": "k7", "layer_2": "k5", "layer_3": "k3", "layer_4": "k5",
    "layer_5": "k7", "layer_6": "k3", "layer_7": "k7", "layer_8": "k3",
    "layer_9": "k7", "layer_10": "k3", "layer_11": "k7", "layer_12": "xcep",
    "layer_13": "k3", "layer_14": "k3", "layer_15": "k3", "layer_16": "k3",
    "layer_17": "xcep", "layer_18": "k7", "layer_19": "xcep", "layer_20": "xcep",
}


class SPOSSpace(ShuffleNetSpace):
    """NNI's ShuffleNetV2 SPOS space with an optional small-input (32x32) stem.

    Parameters
    ----------
    num_labels
        Classes of the classifier; defaults to 1000 (ImageNet) or 10 with ``small_input``.
    small_input
        Use a stride-1 stem so that a 32x32 input (CIFAR-sized) keeps 2x2 maps in the last stage.
    channel_search
        NNI's optional ``channel_{i}`` choices of the blocks' middle width (0.2x .. 1.6x).
    affine
        Affine batch norms.
    width_mult : float, default=1.0
        Multiplier of every layer's channel count (rounded to a multiple of 8, at least 8);
        1.0 is NNI's space as published.
    """

    def __init__(self, num_labels: int | None = None, small_input: bool = False,
                 channel_search: bool = False, affine: bool = True, width_mult: float = 1.0):
        if num_labels is None:
            num_labels = 10 if small_input else 1000
        if not (width_mult > 0):
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        # Read by the stage_out_channels setter while ShuffleNetSpace.__init__ builds the layers.
        object.__setattr__(self, "_width_mult", float(width_mult))
        super().__init__(num_labels=num_labels, channel_search=channel_search, affine=affine)
        self.small_input = small_input
        self.width_mult = float(width_mult)
        if small_input:
            stem = self.first_conv[0]
            self.first_conv[0] = nn.Conv2d(stem.in_channels, stem.out_channels, 3, 1, 1, bias=False)
            nn.init.normal_(self.first_conv[0].weight, 0, 0.01)

    @property
    def stage_out_channels(self) -> list[int]:
        """Output channels of the stem, the four stages and the last conv (after ``width_mult``)."""
        return self._stage_out_channels

    @stage_out_channels.setter
    def stage_out_channels(self, channels: list[int]) -> None:
        # ShuffleNetSpace.__init__ assigns its published widths here before building any layer,
        # so scaling them in this setter is the one place a width multiplier has to act.
        w = self.__dict__.get("_width_mult", 1.0)
        scaled = [channels[0]] + [c if w == 1.0 else max(8, int(round(c * w / 8)) * 8)
                                  for c in channels[1:]]
        object.__setattr__(self, "_stage_out_channels", scaled)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The NCHW input shape this space is meant for (batch 1)."""
        return SPOS_SMALL_INPUT_SHAPE if self.small_input else SPOS_INPUT_SHAPE


def spos_space(small_input: bool = False, **kwargs: Any) -> SPOSSpace:
    """Build the SPOS space (see :class:`SPOSSpace` for the arguments)."""
    return SPOSSpace(small_input=small_input, **kwargs)


def spos_published_model(small_input: bool = False, **kwargs: Any) -> nn.Module:
    """The frozen network of the published SPOS architecture (random weights)."""
    return SPOSSpace.frozen_factory(dict(SPOS_PUBLISHED_ARCH))(small_input=small_input, **kwargs)


def spos_random_sample(rng: Any = None) -> dict[str, str]:
    """A uniformly random SPOS architecture ``{layer_i: value}``.

    ``rng`` is a ``random.Random``, a ``numpy.random.Generator``, an int seed or None.
    """
    import random

    if rng is None or isinstance(rng, int):
        rng = random.Random(rng)
    if hasattr(rng, "integers"):  # numpy Generator
        idx = rng.integers(0, len(SPOS_VALUES), size=len(SPOS_LABELS))
        return {label: SPOS_VALUES[int(i)] for label, i in zip(SPOS_LABELS, idx)}
    return {label: rng.choice(SPOS_VALUES) for label in SPOS_LABELS}


def check_spos_sample(sample: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first missing/unknown label or bad value of a SPOS sample."""
    missing = [label for label in SPOS_LABELS if label not in sample]
    if missing:
        raise ValueError(f"SPOS sample lacks labels {missing}; it needs all of layer_1..layer_20")
    unknown = [k for k in sample if k not in SPOS_LABELS and not str(k).startswith("channel_")]
    if unknown:
        raise ValueError(f"SPOS sample has unknown labels {unknown}; the space's labels are "
                         "layer_1..layer_20")
    for label in SPOS_LABELS:
        if sample[label] not in SPOS_VALUES:
            raise ValueError(f"SPOS sample has {label}={sample[label]!r}; the values are "
                             f"{list(SPOS_VALUES)}")


def _copy_bn(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def _resized(weight, size: int):
    """A square kernel zero-padded (or centre-cropped) to ``size`` x ``size``."""
    import torch.nn.functional as F

    pad = (size - weight.shape[-1]) // 2
    return weight if pad == 0 else F.pad(weight, (pad,) * 4)  # negative padding crops


def _affine(bn: nn.Module, weight: Any, bias: Any) -> None:
    import torch

    if bn.weight is not None:
        bn.weight.copy_(torch.as_tensor(weight))
        bn.bias.copy_(torch.as_tensor(bias))


def align_candidates(space: nn.Module, source: str = "k3", shift: float = 3.0) -> int:
    """Make every candidate of every SPOS choice block start as (a copy of) the function of its
    ``source`` candidate, e.g. after that path was trained alone for a few steps.

    Why: a ShuffleNetV2 block passes its branch's output on by concatenation (no residual sum),
    so each candidate's output channels mean what its own, independently initialised last
    pointwise conv makes them mean. With one random candidate per layer per step the next
    layers see a differently rotated representation at every step, the path gradients of the
    shared layers cancel, and the supernet stays at chance (``docs/spos_supernet.md``). Aligned
    candidates keep the paths' features compatible while uniform sampling trains them apart.

    - ``k5``/``k7`` get ``source``'s weights with each depthwise kernel zero-padded to their size
      (the same function; ``source`` must be a ShuffleNetV2 block, ``k3`` by default);
    - ``xcep`` (dw-pw-dw-pw-dw-pw) gets: first depthwise = identity, first pointwise and its
      batch norm = ``source``'s first; second depthwise and batch norm = ``source``'s; second
      pointwise = identity with a batch norm of bias ``shift`` (so its ReLU passes everything:
      the values are normalised, ``shift`` standard deviations above zero); third depthwise =
      identity with ``source``'s depthwise batch-norm affine; last pointwise and batch norm =
      ``source``'s. The same function up to batch-norm statistics at stride 1; at stride 2 the
      main branch subsamples before its depthwise kernels instead of inside them (close, not
      equal); ``branch_proj`` is copied (both use 3x3).

    Works on a :class:`SPOSSpace` (``LayerChoice``) and on NNI's one-shot supernet made of it
    (``PathSamplingLayer``); weights only, in place. Batch-norm running statistics are copied too
    (recalibrate before scoring in any case).

    Parameters
    ----------
    space : torch.nn.Module
        The SPOS space or supernet.
    source : str, default="k3"
        The candidate whose function the others copy (``k3``, ``k5`` or ``k7``).
    shift : float, default=3.0
        Bias (in standard deviations) of the batch norm before the ReLU that ``xcep`` has and
        ``source`` lacks.

    Returns
    -------
    int
        The number of choice blocks aligned.
    """
    import torch
    from nni.nas.nn.pytorch import LayerChoice
    from nni.nas.hub.pytorch.shufflenet import ShuffleXceptionBlock

    n = 0
    with torch.no_grad():
        for choice in space.modules():
            if not isinstance(choice, LayerChoice) or source not in list(choice.names):
                continue
            src = choice[source]
            if isinstance(src, ShuffleXceptionBlock):
                raise ValueError(f"align_candidates: source must be k3, k5 or k7, not {source!r}")
            sm = src.branch_main  # pw, bn, relu, dw, bn, pw, bn, relu
            for name in choice.names:
                dst = choice[name]
                if dst is src:
                    continue
                if isinstance(dst, ShuffleXceptionBlock):
                    dm = dst.branch_main  # dw bn pw bn relu dw bn pw bn relu dw bn pw bn relu
                    nn.init.dirac_(dm[0].weight, groups=dm[0].groups)
                    dm[1].reset_parameters()
                    dm[2].weight.copy_(sm[0].weight)
                    _copy_bn(dm[3], sm[1])
                    dm[5].weight.copy_(_resized(sm[3].weight, dm[5].weight.shape[-1]))
                    _copy_bn(dm[6], sm[4])
                    dm[7].weight.copy_(torch.eye(dm[7].weight.shape[0])[:, :, None, None])
                    dm[8].reset_parameters()
                    _affine(dm[8], 1.0, shift)
                    nn.init.dirac_(dm[10].weight, groups=dm[10].groups)
                    dm[11].reset_parameters()
                    if sm[4].weight is not None:
                        _affine(dm[11], sm[4].weight, sm[4].bias)
                    dm[12].weight.copy_(sm[5].weight)
                    _copy_bn(dm[13], sm[6])
                else:
                    for a, b in zip(src.branch_main, dst.branch_main):
                        if isinstance(a, nn.Conv2d):
                            b.weight.copy_(_resized(a.weight, b.weight.shape[-1]))
                        elif isinstance(a, nn.modules.batchnorm._BatchNorm):
                            _copy_bn(b, a)
                if src.stride == 2:
                    for a, b in zip(src.branch_proj, dst.branch_proj):
                        if isinstance(a, nn.Conv2d):
                            b.weight.copy_(_resized(a.weight, b.weight.shape[-1]))
                        elif isinstance(a, nn.modules.batchnorm._BatchNorm):
                            _copy_bn(b, a)
            n += 1
    return n
