"""Learning-rate schedules for the attack optimiser, built from the iteration budget."""

from __future__ import annotations

import math
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


def cosine(
    optimizer: torch.optim.Optimizer,
    iterations: int,
    warmup: float = 0.0,
    final: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first ``warmup`` fraction of the run, then cosine decay of the
    rate to ``final`` times its start (DeepInversion / GradInversion's schedule)."""
    warm = int(warmup * iterations)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, iterations - warm))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
