"""Model zoo: classic ImageNet CNNs as plain ``torch.nn`` modules (no torchvision).

Every model takes ``(N, 3, H, W)`` float input (224x224 nominal; any size down to 64x64 works)
and returns ``(N, num_classes)`` logits; defaults are 1000 classes. Weights are randomly
initialised, deterministically given ``torch.manual_seed``.

    >>> from nnmeter_nas import zoo
    >>> model = zoo.build("mobilenet_v2", width_mult=0.75).eval()
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .densenet import densenet_like
from .googlenet import googlenet_like
from .mnasnet import mnasnet_a1
from .mobilenet import mobilenet_v1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from .proxyless import proxyless_mobile
from .resnet import cifar_resnet20, resnet18, resnet34, resnet50
from .shufflenet import shufflenet_v2
from .squeezenet import squeezenet1_1
from .vgg import vgg11_bn

__all__ = ["ZOO", "CIFAR_ZOO", "build", "list_models"]

#: ImageNet-style models (3x224x224 in, 1000 logits out by default), by name.
ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "shufflenet_v2": shufflenet_v2,
    "mnasnet_a1": mnasnet_a1,
    "squeezenet1_1": squeezenet1_1,
    "vgg11_bn": vgg11_bn,
    "googlenet_like": googlenet_like,
    "densenet_like": densenet_like,
    "proxyless_mobile": proxyless_mobile,
}

#: Small CIFAR-style models (3x32x32 in, 10 logits out by default), by name.
CIFAR_ZOO: dict[str, Callable[..., nn.Module]] = {"cifar_resnet20": cifar_resnet20}


def list_models() -> list[str]:
    """Names accepted by :func:`build` (ImageNet models first, then CIFAR models)."""
    return list(ZOO) + list(CIFAR_ZOO)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build zoo model ``name`` with constructor keywords (``num_classes``, ``width_mult``...).

    The model is returned in eval() mode. Raises ``KeyError`` naming the known models when
    ``name`` is unknown.
    """
    factory = ZOO.get(name) or CIFAR_ZOO.get(name)
    if factory is None:
        raise KeyError(f"unknown zoo model {name!r}; known models: {', '.join(list_models())}")
    return factory(**kwargs).eval()
