"""Learning-rate schedules for the attack optimiser, built from the iteration budget."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def step_decay(
    optimizer: torch.optim.Optimizer,
    iterations: int,
    fractions: Sequence[float] = (0.375, 0.625, 0.875),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the rate by ``gamma`` at the given fractions of the run (Inverting Gradients)."""
    milestones = sorted({max(1, int(f * iterations)) for f in fractions})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
