"""Image priors added to the gradient distance, each with its weight from config."""

from __future__ import annotations

from torch import Tensor


class TotalVariation:
    """weight * (mean |dx| + mean |dy|) over a batch (K, C, H, W)."""

    name = "tv"

    def __init__(self, weight: float = 1e-4) -> None:
        self.weight = weight

    def __call__(self, images: Tensor) -> Tensor:
        dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
        dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
        return self.weight * (dx + dy)
