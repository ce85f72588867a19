"""Secure aggregation: the server sees only the example-weighted mean of several clients'
updates. The defence itself is the identity on one client's update; the lead's orchestration
runs ``clients`` clients and shares :func:`weighted_mean` of their updates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deepleak.defences.base import Defence, integer
from deepleak.errors import DeepleakError


def weighted_mean(updates: Sequence[Sequence[Tensor]], weights: Sequence[float]) -> tuple[Tensor, ...]:
    """Per tensor, sum_i w_i u_i / sum_i w_i over the clients' updates (accumulated in float64,
    returned in the first update's dtypes); FedAvg weights w_i are the clients' example counts.

    This is the correct mean. breaching's running mean ``agg += (g - agg) / n`` with n the
    number of users rather than the count so far gives g1/4 + g2/2 for two users (n = 2:
    agg = g1/2, then agg + (g2 - agg)/2), not (g1 + g2)/2.
    """
    if not updates:
        raise DeepleakError("secure aggregation needs at least one client update")
    if len(weights) != len(updates):
        raise DeepleakError(f"secure aggregation got {len(updates)} updates but {len(weights)} weights")
    sizes = {len(update) for update in updates}
    if len(sizes) != 1:
        raise DeepleakError(f"secure aggregation got updates with different numbers of tensors: {sorted(sizes)}")
    values = [float(w) for w in weights]
    if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise DeepleakError(f"secure aggregation weights must be finite and >= 0 with a positive sum, got {list(weights)}")
    total = sum(values)
    mean = []
    for tensors in zip(*updates):
        acc = torch.zeros(tensors[0].shape, dtype=torch.float64, device=tensors[0].device)
        for w, t in zip(values, tensors):
            acc = acc + w * t.detach().double()
        mean.append((acc / total).to(tensors[0].dtype))
    return tuple(mean)


class SecAgg(Defence):
    """The server sees only the example-weighted mean of ``clients`` clients' updates."""

    name = "secagg"

    def __init__(self, clients: int = 2) -> None:
        self.clients = integer("clients", clients)
        if self.clients < 1:
            raise DeepleakError(f"defence.clients must be >= 1, got {clients!r}")

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "clients": self.clients}
