"""Uniform quantisation of the shared update (communication-efficient FL as a defence)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deepleak.defences.base import ClientContext, Defence, draws, integer
from deepleak.errors import DeepleakError


class Quantize(Defence):
    """Per tensor, snap every entry to one of 2**bits evenly spaced levels between the
    tensor's own min and max.

    step = (max - min) / (2**bits - 1); q = min + k * step with k = round((x - min) / step),
    torch.round's round half to even, or with ``stochastic`` k = floor(v) + Bernoulli(v -
    floor(v)) (unbiased: E[q] = x; the uniforms come from the generator, float64). Computed in
    float64, returned in the input's dtype. A constant tensor (max == min) is returned as it
    was. The min and max themselves are not shared separately: they are levels of the result.
    """

    name = "quantize"

    def __init__(self, bits: int = 8, stochastic: bool = False) -> None:
        self.bits = integer("bits", bits)
        if not 1 <= self.bits <= 32:
            raise DeepleakError(f"defence.bits must be an integer in 1..32, got {bits!r}")
        if not isinstance(stochastic, bool):
            raise DeepleakError(f"defence.stochastic must be true or false, got {stochastic!r}")
        self.stochastic = stochastic

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "stochastic": self.stochastic}

    def quantize(self, tensor: Tensor, generator: torch.Generator | None) -> Tensor:
        """One tensor quantised (``generator`` is only read when ``stochastic``)."""
        x = tensor.detach().double()
        low, high = x.min(), x.max()
        if not bool(high > low):
            return tensor
        top = 2**self.bits - 1
        step = (high - low) / top
        level = (x - low) / step
        if self.stochastic:
            below = torch.floor(level)
            up = draws(x.shape, x, generator, "uniform") < (level - below)
            level = below + up.double()
        else:
            level = torch.round(level)
        return (low + level.clamp(0, top) * step).to(tensor.dtype)

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        return tuple(self.quantize(t, generator) for t in update)
