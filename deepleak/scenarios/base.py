"""What a federated client shares, and the only thing the attacker may look at.

The threat-model boundary of deepleak runs through this module. A scenario takes the
private batch and the global model and returns an :class:`Observation`. Everything the
attacker (label methods, reconstruction attacks) receives is an Observation: the public
model, the public training recipe and the shared update. The private batch never crosses
this line; only :mod:`deepleak.metrics` compares against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PrivateBatch:
    """The client's private data. Pixels in [0, 1], shape (K, C, H, W); labels (K,) int64.

    Only scenarios (which play the client) and metrics (which score the attack) touch it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor | None = None  # positions in the data set, for the record

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Recipe:
    """The client's public training recipe, known to the server.

    ``num_samples`` is K for FedSGD (one batch) and N for FedAvg (the client's whole data).
    ``lr`` and ``epochs`` matter for FedAvg only. ``bn_mode`` says whether batch-norm layers
    run in train mode (batch statistics) or eval mode (running statistics) on the client.
    """

    num_samples: int
    batch_size: int
    num_classes: int
    image_shape: tuple[int, int, int]
    epochs: int = 1
    lr: float = 0.0
    bn_mode: str = "train"
    loss: str = "mean cross-entropy"


@dataclass(frozen=True)
class Observation:
    """All the attacker sees.

    ``model`` is the attacker's own copy of the public global model at W_0 (changing it does
    not touch the client's). ``gradient`` (FedSGD) is the gradient of the *mean* loss over the
    batch, one tensor per entry of ``model.parameters()`` in that order. ``weights`` (FedAvg)
    are the client's weights after local training, in the same order. ``metadata`` holds any
    extra information the scenario is configured to leak (empty by default).
    """

    scenario: str
    model: nn.Module
    recipe: Recipe
    gradient: tuple[torch.Tensor, ...] | None = None
    weights: tuple[torch.Tensor, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def named_gradient(self) -> dict[str, torch.Tensor]:
        """The shared gradient keyed by parameter name."""
        if self.gradient is None:
            raise ValueError(f"the {self.scenario} scenario shares no gradient")
        names = [name for name, _ in self.model.named_parameters()]
        return dict(zip(names, self.gradient))


def set_bn_mode(model: nn.Module, mode: str) -> nn.Module:
    """Put the model in eval mode except batch-norm layers, which follow ``mode``.

    Returns the model. Dropout is never used by deepleak's victims, so eval elsewhere is exact.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"bn_mode must be 'train' or 'eval', got {mode!r}")
    model.eval()
    if mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    return model
