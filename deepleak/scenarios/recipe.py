"""The public training recipe: what the client runs and what the attacker replays.

Both sides of the threat model import this module (and nothing else of each other): the
client (:mod:`deepleak.scenarios`) runs the recipe on its private batch; label methods and
attacks re-run it on dummy data. It holds only public knowledge: how batch norm is run, how an
epoch is split into mini-batches, and FedAvg's local plain SGD.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepleak.models import features_and_logits


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


def epoch_orders(num_samples: int, epochs: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """One permutation of range(N) per epoch (int64, (N,)); the identity when ``generator`` is None."""
    if generator is None:
        return [torch.arange(num_samples) for _ in range(epochs)]
    return [torch.randperm(num_samples, generator=generator) for _ in range(epochs)]


def step_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split one epoch's order (N,) into its mini-batches of B (the last one may be smaller)."""
    return list(torch.split(order, batch_size))


def local_sgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator | None,
    after_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    gradient_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
) -> int:
    """The FedAvg recipe, in place on ``model``'s parameters: E epochs of plain SGD (no
    momentum) on the mean cross-entropy over mini-batches of B, in the orders of
    :func:`epoch_orders`. The client plays it on its private data; attackers replay the same
    public recipe on dummy data.

    ``after_step(step, indices, features, logits)`` runs after each update with the step
    number (from 1), the batch's indices (b,) and its detached penultimate features (b, M) and
    logits (b, C) at the weights the step started from. ``gradient_fn(model, images, labels)``
    replaces a step's gradient (a defended client: dp_sgd's clipped, noised gradient); None:
    the mean cross-entropy's. Returns the number of steps T.
    """
    parameters = list(model.parameters())
    step = 0
    for order in epoch_orders(len(labels), epochs, generator):
        for indices in step_batches(order.to(labels.device), batch_size):
            features, logits = features_and_logits(model, images[indices])
            if gradient_fn is None:
                gradient = torch.autograd.grad(F.cross_entropy(logits, labels[indices]), parameters)
            else:
                gradient = gradient_fn(model, images[indices], labels[indices])
            with torch.no_grad():
                for parameter, g in zip(parameters, gradient):
                    parameter.sub_(lr * g)
            step += 1
            if after_step is not None:
                after_step(step, indices, features.detach(), logits.detach())
    return step
