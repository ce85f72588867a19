"""Victim models: construction from config with a seeded init, checkpoints, the classifier.

Every victim ends in one ``nn.Linear`` (the classifier) whose input are the penultimate
features; label methods find it with :func:`classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call

from deepleak.config import make
from deepleak.errors import DeepleakError
from deepleak.models.base import Victim, load_checkpoint
from deepleak.models.convnet import ConvNet
from deepleak.models.lenet import LeNet
from deepleak.models.mlp import MLP
from deepleak.models.resnet import ResNet18
from deepleak.models.resnet_imagenet import ResNet18ImageNet, ResNet50

__all__ = [
    "MLP",
    "ConvNet",
    "LeNet",
    "ResNet18",
    "ResNet18ImageNet",
    "ResNet50",
    "Victim",
    "build_model",
    "classifier",
    "features_and_logits",
    "load_checkpoint",
]


def build_model(
    model_cfg: DictConfig | dict[str, Any],
    num_classes: int,
    image_shape: tuple[int, int, int],
    seed: int,
) -> nn.Module:
    """Instantiate the model config with the data's ``num_classes`` and ``image_shape``; the
    init is drawn from ``seed`` alone (the global generator is left as it was). A
    ``checkpoint`` in the config is the model's own argument (:class:`Victim`)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return make(model_cfg, num_classes=num_classes, image_shape=tuple(image_shape))
    finally:
        torch.random.set_rng_state(generator_state)


def classifier(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of the model: the layer whose gradient label methods read."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise DeepleakError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1]


def classifier_parameter_names(model: nn.Module) -> tuple[str, str | None]:
    """Names of the classifier's weight and bias (None without bias) in named_parameters()."""
    layer = classifier(model)
    names = {id(p): name for name, p in model.named_parameters()}
    bias = names[id(layer.bias)] if layer.bias is not None else None
    return names[id(layer.weight)], bias


def features_and_logits(model: nn.Module, x: Tensor, weights: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``x`` and return (penultimate features (K, M), logits (K, N)); with
    ``weights`` (in ``parameters()`` order) the model runs with them in place of its own
    parameters (``torch.func.functional_call``: differentiable in the weights and in ``x``)."""
    captured: list[Tensor] = []
    handle = classifier(model).register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        if weights is None:
            logits = model(x)
        else:
            names = [name for name, _ in model.named_parameters()]
            logits = functional_call(model, dict(zip(names, weights)), (x,))
    finally:
        handle.remove()
    return captured[-1], logits
