"""Distances between a candidate gradient and the shared one, summed over layers.

Each takes two equal-length sequences of tensors (candidate, target) and returns a scalar
tensor that keeps the candidate's graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class L2:
    """Squared Euclidean distance summed over all layers (DLG, Geng et al.)."""

    name = "l2"

    def __call__(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        return sum(((c - t) ** 2).sum() for c, t in zip(candidate, target))


class Cosine:
    """1 - cosine similarity of the whole gradient, all layers as one vector (Inverting
    Gradients). ``eps`` keeps a zero candidate finite."""

    name = "cosine"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def __call__(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        dot = sum((c * t).sum() for c, t in zip(candidate, target))
        candidate_norm = sum((c * c).sum() for c in candidate)
        target_norm = sum((t * t).sum() for t in target)
        return 1 - dot / (torch.sqrt(candidate_norm * target_norm) + self.eps)
