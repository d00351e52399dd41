"""Search spaces for hardware-aware NAS with NNI 3.

Names are exported lazily: importing this package imports neither torch nor NNI.

- :mod:`.nasbench201`: ``build_nb201_network`` (plain PyTorch), ``NasBench201Space`` (NNI 3 model
  space, labels ``cell/0_1`` ... ``cell/2_3``), ``sample_to_arch_str``, ``arch_str_to_sample``.
- :mod:`.spos`: ``SPOSSpace`` (NNI's ShuffleNetV2 SPOS space, 224x224 or a 32x32 small-input
  variant), ``SPOS_PUBLISHED_ARCH``, ``spos_published_model``, ``spos_random_sample``.
- :mod:`.toy`: ``ToySpace`` (54 candidates at 16x16, for tests and examples).
- :mod:`.registry`: the spaces known by name (``SPACES``, ``register_space``) and
  :mod:`.sampling`: ``random_networks`` of a named space.
"""
from __future__ import annotations

from .._lazy import lazy_exports

# name -> submodule that defines it
_LAZY = {
    "build_nb201_network": "nasbench201",
    "NasBench201Space": "nasbench201",
    "sample_to_arch_str": "nasbench201",
    "arch_str_to_sample": "nasbench201",
    "NB201_LABELS": "nasbench201",
    "SPOSSpace": "spos",
    "spos_space": "spos",
    "SPOS_LABELS": "spos",
    "SPOS_VALUES": "spos",
    "SPOS_PUBLISHED_ARCH": "spos",
    "SPOS_INPUT_SHAPE": "spos",
    "SPOS_SMALL_INPUT_SHAPE": "spos",
    "spos_published_model": "spos",
    "spos_random_sample": "spos",
    "ToySpace": "toy",
    "TOY_INPUT_SHAPE": "toy",
    "register_space": "registry",
    "SPACES": "registry",
    "random_networks": "sampling",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
