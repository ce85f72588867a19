"""Magnitude pruning of the shared update (DLG's and Huang et al.'s gradient pruning)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deepleak.defences.base import ClientContext, Defence, fraction


def pruned_count(ratio: float, numel: int) -> int:
    """How many of ``numel`` entries a ratio zeroes: floor(ratio * numel), the product first
    rounded to 9 decimals so that float error does not drop one (0.29 * 100 is
    28.999999999999996 in floating point; it counts as 29)."""
    return math.floor(round(ratio * numel, 9))


def prune_smallest(tensor: Tensor, count: int) -> Tensor:
    """A copy of ``tensor`` with its ``count`` entries of smallest magnitude set to zero.

    Ties are broken by a stable sort of |x| over the flattened tensor: among equal magnitudes
    the earlier entry (row-major order) is zeroed first, so the result is deterministic.
    """
    if count == 0:
        return tensor
    flat = tensor.reshape(-1).clone()
    order = torch.sort(flat.abs(), stable=True).indices
    flat[order[:count]] = 0
    return flat.reshape(tensor.shape)


class Prune(Defence):
    """Per tensor, zero the fraction ``ratio`` of its entries with the smallest magnitude:
    :func:`pruned_count` = floor(ratio * numel) entries, ties by a stable sort (see
    :func:`prune_smallest`). A tensor where that count is 0 is returned as it was."""

    name = "prune"

    def __init__(self, ratio: float = 0.9) -> None:
        self.ratio = fraction("ratio", ratio)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": self.ratio}

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        return tuple(prune_smallest(t, pruned_count(self.ratio, t.numel())) for t in update)
