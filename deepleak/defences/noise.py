"""Additive noise on the shared update (DLG's and Wei et al.'s noise defence, without clipping:
for a differential-privacy guarantee use :mod:`deepleak.defences.dp_sgd`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deepleak.defences.base import ClientContext, Defence, choice, draws, real
from deepleak.errors import DeepleakError

DISTRIBUTIONS = ("gaussian", "laplace")

# The largest float64 below 0.5: |u| is kept under it so log1p(-2|u|) stays finite (u = -0.5
# exactly has probability 2**-53 per draw).
_BELOW_HALF = 0.5 - 2.0**-54


class Noise(Defence):
    """Add i.i.d. noise of standard deviation ``std`` to every entry of every tensor.

    ``gaussian``: N(0, std^2). ``laplace``: Laplace(0, b) with scale b = std / sqrt(2), so its
    standard deviation is also ``std`` and its mean absolute value is b; drawn by the inverse
    CDF of u ~ U(-0.5, 0.5): x = -b sign(u) log(1 - 2|u|). Draws come from the given generator
    in float64 (see :func:`deepleak.defences.base.draws`) and are added in the update's dtype.
    ``std = 0`` returns the update unchanged and draws nothing.
    """

    name = "noise"

    def __init__(self, std: float = 1e-3, distribution: str = "gaussian") -> None:
        self.std = real("std", std)
        if self.std < 0:
            raise DeepleakError(f"defence.std must be >= 0, got {std!r}")
        self.distribution = choice("distribution", distribution, DISTRIBUTIONS)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "std": self.std, "distribution": self.distribution}

    def sample(self, shape: torch.Size, like: Tensor, generator: torch.Generator) -> Tensor:
        """Noise of ``shape`` in float64 on ``like``'s device (what :meth:`defend` adds)."""
        if self.distribution == "gaussian":
            return self.std * draws(shape, like, generator, "normal")
        u = draws(shape, like, generator, "uniform") - 0.5
        scale = self.std / math.sqrt(2.0)
        return -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs().clamp(max=_BELOW_HALF))

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        if self.std == 0:
            return tuple(update)
        return tuple(t + self.sample(t.shape, t, generator).to(t.dtype) for t in update)
