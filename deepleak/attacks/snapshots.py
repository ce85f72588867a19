"""Snapshots: gradient matching at several intermediate models of a FedAvg client, jointly.

When the client also shares its weights every k steps (``scenario.snapshot_every=k``), the
server sees W_0, W_k, W_2k, ..., W_T. Each segment [a, b] gives a pseudo-gradient
(W_a - W_b) / (eta (b - a)) at the model W_a, and the dummy images (all N, restored labels,
fixed) must explain every segment at once: the objective is the sum over segments of
``distance(grad_W L(x, y) at W_a, pseudo-gradient of [a, b])`` plus the priors. It reuses
GradientInversion's optimiser loop, restarts and budget.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from deepleak.attacks.inversion import GradientInversion, Reconstruction
from deepleak.errors import DeepleakError
from deepleak.labels.fedavg import with_weights
from deepleak.scenarios.base import Observation, set_bn_mode


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


class SnapshotInversion(GradientInversion):
    """GradientInversion over every snapshot segment jointly (same settings)."""

    def objective(self, model, images, labels, target):
        """(total loss, summed gradient distance); ``model`` and ``target`` are per-segment lists."""
        distance = images.new_zeros(())
        for segment_model, segment_target in zip(model, target):
            loss = F.cross_entropy(segment_model(images), labels)
            candidate = torch.autograd.grad(loss, list(segment_model.parameters()), create_graph=True)
            distance = distance + self.distance(list(candidate), segment_target)
        total = distance
        for prior in self.priors.values():
            total = total + prior(images)
        return total, distance

    def reconstruct(self, observation: Observation, labels: torch.Tensor, seed: int = 0) -> Reconstruction:
        """Reconstruct the N images behind the snapshots and W_T given N ``labels``."""
        parts = segments(observation)
        models, targets = [], []
        for weights, gradient in parts:
            segment_model = set_bn_mode(with_weights(copy.deepcopy(observation.model), weights), observation.recipe.bn_mode)
            for parameter in segment_model.parameters():
                parameter.requires_grad_(True)
            models.append(segment_model)
            device = next(segment_model.parameters()).device
            targets.append([g.to(device) for g in gradient])
        device = next(models[0].parameters()).device
        labels = labels.to(device)
        shape = (len(labels), *observation.recipe.image_shape)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        deadline = start + self.budget_s if self.budget_s else math.inf
        best, distances = None, []
        evaluations = iterations_done = nonfinite = 0
        stopped = interrupted = False
        for restart in range(self.restarts):
            if interrupted:
                break
            if time.perf_counter() >= deadline:
                stopped = True
                break
            images = torch.rand(shape, generator=generator).to(device).requires_grad_(True)
            result = self._run_restart(models, images, labels, targets, deadline, restart)
            evaluations += result["evaluations"]
            iterations_done += result["iterations"]
            stopped = stopped or result["stopped"]
            nonfinite += int(result["nonfinite"])
            interrupted = bool(result.get("interrupted", False))
            distances.append(result["distance"])
            if best is None or result["distance"] < best[0]:
                best = (result["distance"], restart, result["images"], result["history"])
        assert best is not None
        return Reconstruction(
            images=best[2].clamp(0, 1).cpu(), labels=labels.cpu(), gradient_distance=best[0],
            restart_distances=distances, best_restart=best[1], iterations=iterations_done,
            evaluations=evaluations, seconds=time.perf_counter() - start, nonfinite_restarts=nonfinite,
            stopped_by_budget=stopped, interrupted=interrupted, history=best[3],
        )
