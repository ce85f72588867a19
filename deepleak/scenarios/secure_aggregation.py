"""Secure aggregation (``defence=secagg``): the server sees only the example-weighted mean of
n clients' updates.

Each of the n clients holds its own private batch, drawn from the same distribution, and
plays the configured scenario on the same global model; this module averages what they share
into one Observation and joins their batches into the union the attack is scored against.

- FedSGD: the mean of the n gradients, weighted by each client's K, is the gradient of the
  mean loss over the union of n x K samples (without batch norm in train mode, whose
  statistics are each client's own). The Observation's recipe counts n x K samples.
- FedAvg: the mean of the n clients' W_T. Every client ran T = E ceil(N / B) steps, so the
  recipe counts n x N samples in steps of n x B: the same T, and each step's mean gradient
  over the n clients is the union's step over n x B samples (up to the clients' weights
  drifting apart during local training).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from deepleak.defences import weighted_mean
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation, PrivateBatch


def aggregate(observations: Sequence[Observation], public: dict) -> Observation:
    """The one Observation the server receives from n clients under secure aggregation;
    ``public``: the secagg defence's public record (with ``clients``)."""
    first = observations[0]
    sizes = [o.recipe.num_samples for o in observations]
    if len(set(sizes)) != 1 or len({o.recipe.batch_size for o in observations}) != 1:
        raise DeepleakError("secagg simulates clients of equal size; got clients of " + ", ".join(map(str, sizes)))
    n = len(observations)
    recipe = dataclasses.replace(first.recipe, num_samples=sum(sizes), batch_size=first.recipe.batch_size * n)
    shared: dict = {}
    if first.gradient is not None:
        shared["gradient"] = weighted_mean([o.gradient for o in observations], sizes)
    else:
        shared["weights"] = weighted_mean([o.weights for o in observations], sizes)
    # Per-client metadata (FedAvg's leaked step labels) does not survive aggregation.
    return dataclasses.replace(first, recipe=recipe, metadata={}, defence=dict(public), **shared)


def union(batches: Sequence[PrivateBatch]) -> PrivateBatch:
    """The n clients' private batches as one, in client order (what the attack is scored against)."""
    indices = None
    if all(b.indices is not None for b in batches):
        indices = torch.cat([torch.as_tensor(b.indices) for b in batches])
    return PrivateBatch(torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches]), indices)
