"""FedSGD: the client shares the gradient of its mean loss over one private batch."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepleak.defences import Defence
from deepleak.scenarios.base import Observation, PrivateBatch, Recipe
from deepleak.scenarios.defended import defence_generator, public_defence, undefended
from deepleak.scenarios.recipe import set_bn_mode


class FedSGD:
    """One client step: gradient of mean cross-entropy over the K private samples at W_0.

    ``bn_mode`` is how the client runs batch norm (train: batch statistics).
    """

    name = "fedsgd"

    def __init__(self, bn_mode: str = "train") -> None:
        self.bn_mode = bn_mode

    @property
    def metadata_leaked(self) -> dict[str, Any]:
        """Nothing beyond the gradient and the public recipe (for metrics.json)."""
        return {}

    def observe(self, model: nn.Module, batch: PrivateBatch, num_classes: int, trial: int | None = None,
                defence: Defence | None = None, defence_seed: int = 0) -> Observation:
        """Play the client on ``batch`` and return what the server receives (``trial``: unused,
        one gradient has no randomness). ``defence`` computes the step's gradient (dp_sgd:
        clipped per sample, noised) and then transforms it (noise, clip, prune, ...), with
        draws seeded by ``defence_seed``."""
        client = set_bn_mode(copy.deepcopy(model), self.bn_mode)
        if undefended(defence):  # exactly the undefended client (defence=none changes no number)
            loss = F.cross_entropy(client(batch.images), batch.labels)
            gradient = torch.autograd.grad(loss, list(client.parameters()))
        else:
            gradient = defence.step_update(client, batch.images, batch.labels, defence_generator(defence_seed))
        recipe = Recipe(
            num_samples=len(batch),
            batch_size=len(batch),
            num_classes=num_classes,
            image_shape=tuple(batch.images.shape[1:]),
            bn_mode=self.bn_mode,
        )
        # The server keeps its own copy of the global model it sent, untouched by the client.
        return Observation(
            scenario=self.name,
            model=copy.deepcopy(model),
            recipe=recipe,
            gradient=tuple(g.detach() for g in gradient),
            defence=public_defence(defence),
        )
