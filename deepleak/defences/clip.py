"""Norm clipping of the whole shared update (the clipping half of DP, without noise)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deepleak.defences.base import ClientContext, Defence, real
from deepleak.errors import DeepleakError


def global_norm(tensors: Sequence[Tensor]) -> float:
    """The L2 norm of all tensors taken as one vector, accumulated in float64."""
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


class Clip(Defence):
    """Scale the update (all tensors as one vector) by min(1, max_norm / ||update||_2).

    An update already within ``max_norm`` (or all zero) is returned unchanged, bit for bit.
    """

    name = "clip"

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = real("max_norm", max_norm)
        if self.max_norm <= 0:
            raise DeepleakError(f"defence.max_norm must be > 0, got {max_norm!r}")

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "max_norm": self.max_norm}

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        norm = global_norm(update)
        if norm <= self.max_norm:
            return tuple(update)
        factor = self.max_norm / norm
        return tuple(t * factor for t in update)
