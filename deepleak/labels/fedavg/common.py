"""What the FedAvg label methods share: the public model with other weights, the client's
recipe replayed on given inputs, the pseudo-gradient's class row sums, a method's name.
"""

from __future__ import annotations

import copy

import torch

from deepleak.labels.base import Named, last_layer_gradient
from deepleak.labels.fedavg.classifier_fit import shared_weights
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import local_sgd, set_bn_mode


def with_weights(model: torch.nn.Module, weights: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """A copy of ``model`` whose parameters are ``weights`` (in ``parameters()`` order); buffers are kept."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for parameter, value in zip(copied.parameters(), weights):
            parameter.copy_(value.to(parameter.device, parameter.dtype))
    return copied


def simulate_training(
    observation: Observation,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    record: bool = False,
) -> tuple[tuple[torch.Tensor, ...], list[dict[str, torch.Tensor]]]:
    """Run the public recipe (E epochs, B, eta, BN mode) from W_0 on ``images`` (N, C, H, W)
    with ``labels`` (N,), batches shuffled from ``seed``.

    Returns the simulated final weights and, when ``record``, one dict per step with the
    batch ``indices`` (b,), its penultimate feature sums ``O`` (b,) and softmax ``p`` (b, C)
    at the weights the step starts from.
    """
    recipe = observation.recipe
    model = set_bn_mode(copy.deepcopy(observation.model), recipe.bn_mode)
    parameters = list(model.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    steps: list[dict[str, torch.Tensor]] = []

    def remember(_step: int, indices: torch.Tensor, features: torch.Tensor, logits: torch.Tensor) -> None:
        steps.append({"indices": indices, "O": features.sum(dim=1).double(), "p": torch.softmax(logits.double(), dim=1)})

    local_sgd(model, images, labels, recipe.epochs, recipe.batch_size, recipe.lr,
              torch.Generator().manual_seed(seed), remember if record else None)
    return tuple(p.detach() for p in parameters), steps


def _row_sums(observation: Observation) -> torch.Tensor:
    """The class row sums S (C,) of the pseudo-gradient's classifier weight, float64 on the CPU."""
    shared_weights(observation)
    weight_gradient, _ = last_layer_gradient(observation.gradient_view())
    return weight_gradient.sum(dim=1).double().cpu()


def method_name(method: object) -> str:
    """A label method's ``name`` (its class name when it has none), for messages."""
    return method.name if isinstance(method, Named) else type(method).__name__
