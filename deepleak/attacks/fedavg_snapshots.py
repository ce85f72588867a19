"""Snapshots: gradient matching at several intermediate models of a FedAvg client, jointly.

When the client also shares its weights every k steps (``scenario.snapshot_every=k``), the
server sees W_0, W_k, W_2k, ..., W_T. Each segment [a, b] gives a pseudo-gradient
(W_a - W_b) / (eta (b - a)) at the model W_a, and the dummy images (all N, restored labels,
fixed) must explain every segment at once: the objective is the sum over segments of
``distance(grad_W L(x, y) at W_a, pseudo-gradient of [a, b])`` plus the priors. It reuses
GradientMatching's optimiser loop, restarts and budget.
"""

from __future__ import annotations

import copy
import torch

from deepleak.attacks.gradient_matching import GradientMatching
from deepleak.errors import DeepleakError
from deepleak.labels.fedavg import with_weights
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import set_bn_mode


def segments(observation: Observation) -> list[tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]]:
    """[(weights at the segment's start, its pseudo-gradient)] from W_0, the snapshots and W_T."""
    if observation.weights is None:
        raise DeepleakError(f"the snapshots attack needs shared weights (+scenario=fedavg), got {observation.scenario}")
    shared = observation.metadata.get("snapshots")
    if not shared:
        raise DeepleakError("the snapshots attack needs intermediate weights: set scenario.snapshot_every > 0")
    points = [(0, tuple(p.detach() for p in observation.model.parameters()))]
    points += [(int(step), tuple(w)) for step, w in shared]
    points.append((observation.local_steps, tuple(observation.weights)))
    result = []
    for (a, start), (b, end) in zip(points, points[1:]):
        scale = 1.0 / (observation.recipe.lr * (b - a))
        result.append((start, [(s - e.to(s.device)) * scale for s, e in zip(start, end)]))
    return result


class FedAvgSnapshots(GradientMatching):
    """GradientMatching over every snapshot segment jointly (same settings)."""

    requires = ("weights", "snapshots")  # what it needs beyond a gradient (checked for an imported update)

    def matching_distance(self, model, images, labels, target):
        """Summed gradient distance; ``model`` and ``target`` are per-segment lists."""
        distance = images.new_zeros(())
        for segment_model, segment_target in zip(model, target):
            distance = distance + super().matching_distance(segment_model, images, labels, segment_target)
        return distance

    def prepare(self, observation: Observation):
        """(per-segment models, per-segment pseudo-gradients, device)."""
        models, targets = [], []
        for weights, gradient in segments(observation):
            segment_model = set_bn_mode(with_weights(copy.deepcopy(observation.model), weights), observation.recipe.bn_mode)
            for parameter in segment_model.parameters():
                parameter.requires_grad_(True)
            models.append(segment_model)
            targets.append([g.to(next(segment_model.parameters()).device) for g in gradient])
        return models, targets, next(models[0].parameters()).device
