"""Gradient inversion: optimise dummy images until their gradient matches the shared one.

The attacker's side of the threat model: :meth:`GradientInversion.reconstruct` receives an
Observation (public model, recipe, shared gradient) and the restored labels, never the
private batch. Labels stay fixed (hard labels) during the optimisation.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation, set_bn_mode

log = logging.getLogger(__name__)

Distance = Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]
Prior = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Reconstruction:
    """The attack's answer. ``images`` (K, C, H, W) in [0, 1], paired with ``labels``.

    ``gradient_distance`` is the distance (without priors) of the chosen restart;
    ``restart_distances`` lists every restart's final distance (inf where it diverged).
    """

    images: torch.Tensor
    labels: torch.Tensor
    gradient_distance: float
    restart_distances: list[float]
    best_restart: int
    iterations: int
    evaluations: int
    seconds: float
    nonfinite_restarts: int = 0
    stopped_by_budget: bool = False
    interrupted: bool = False  # Ctrl-C / SIGTERM: the best result so far, then the caller stops
    history: list[float] = field(default_factory=list)


def check_loop_settings(iterations: int, restarts: int, budget_s: float | None) -> None:
    """The optimisation-loop settings every attack shares, checked before any work."""
    if iterations < 1:
        raise DeepleakError(f"attack.iterations must be >= 1, got {iterations}")
    if restarts < 1:
        raise DeepleakError(f"attack.restarts must be >= 1, got {restarts}")
    if budget_s is not None and budget_s <= 0:
        raise DeepleakError(f"attack.budget_s must be > 0 seconds (or null), got {budget_s}")


class GradientInversion:
    """Minimise ``distance(grad L(x, y), g) + sum(priors(x))`` over dummy images x.

    - ``optimizer``: a partial that takes the parameter list (e.g. torch.optim.LBFGS).
    - ``scheduler``: optional partial taking (optimizer, iterations).
    - ``iterations``: optimiser steps per restart (for L-BFGS one step runs up to
      ``max_iter`` evaluations).
    - ``restarts``: independent random starts; the one with the smallest gradient distance
      wins.
    - ``signed``: replace the image gradient by its sign (Inverting Gradients).
    - ``box``: clamp the images to [0, 1] after every step.
    - ``budget_s``: wall-clock cap for the whole reconstruction; the best result so far is kept.
    """

    def __init__(
        self,
        distance: Distance,
        optimizer: Callable[..., torch.optim.Optimizer],
        priors: Mapping[str, Prior] | None = None,
        scheduler: Callable[..., object] | None = None,
        iterations: int = 100,
        restarts: int = 1,
        signed: bool = False,
        box: bool = True,
        budget_s: float | None = None,
        log_every: int = 0,
    ) -> None:
        check_loop_settings(iterations, restarts, budget_s)
        self.distance = distance
        self.optimizer = optimizer
        self.priors = dict(priors or {})
        self.scheduler = scheduler
        self.iterations = int(iterations)
        self.restarts = int(restarts)
        self.signed = signed
        self.box = box
        self.budget_s = budget_s
        self.log_every = log_every

    def matching_distance(self, model, images: torch.Tensor, labels: torch.Tensor, target) -> torch.Tensor:
        """Distance between the candidate's gradient at ``model`` and ``target``; keeps the graph."""
        loss = F.cross_entropy(model(images), labels)
        candidate = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        return self.distance(list(candidate), target)

    def objective(self, model, images: torch.Tensor, labels: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, gradient distance) for candidate ``images``; both keep the graph."""
        distance = self.matching_distance(model, images, labels, target)
        total = distance
        for prior in self.priors.values():
            total = total + prior(images)
        return total, distance

    def prepare(self, observation: Observation) -> tuple[torch.nn.Module, list[torch.Tensor], torch.device]:
        """(model, target, device) that :meth:`matching_distance` works on."""
        # FedAvg: the weight difference, scaled, stands in for one gradient at W_0 (the
        # paper's simple route); FedSGD observations are returned unchanged.
        observation = observation.gradient_view()
        # A copy: train-mode batch norm updates running statistics on every forward pass.
        model = set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        device = next(model.parameters()).device
        return model, [g.to(device) for g in observation.gradient], device

    def reconstruct(self, observation: Observation, labels: torch.Tensor, seed: int = 0) -> Reconstruction:
        """Reconstruct the K images behind ``observation`` given K ``labels``."""
        model, target, device = self.prepare(observation)
        labels = labels.to(device)
        shape = (len(labels), *observation.recipe.image_shape)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        deadline = start + self.budget_s if self.budget_s else math.inf

        best = None
        distances: list[float] = []
        evaluations = 0
        nonfinite = 0
        iterations_done = 0
        stopped = False
        interrupted = False
        for restart in range(self.restarts):
            if interrupted:
                break
            if time.perf_counter() >= deadline:
                stopped = True
                break
            images = torch.rand(shape, generator=generator).to(device).requires_grad_(True)
            result = self._run_restart(model, images, labels, target, deadline, restart)
            interrupted = result["interrupted"]
            evaluations += result["evaluations"]
            iterations_done += result["iterations"]
            stopped = stopped or result["stopped"]
            nonfinite += int(result["nonfinite"])
            distances.append(result["distance"])
            if best is None or result["distance"] < best[0]:
                best = (result["distance"], restart, result["images"], result["history"])
        assert best is not None
        if not math.isfinite(best[0]):
            log.warning("every restart diverged; the reconstruction is the last finite iterate")
        return Reconstruction(
            images=best[2].clamp(0, 1).cpu(),
            labels=labels.cpu(),
            gradient_distance=best[0],
            restart_distances=distances,
            best_restart=best[1],
            iterations=iterations_done,
            evaluations=evaluations,
            seconds=time.perf_counter() - start,
            nonfinite_restarts=nonfinite,
            stopped_by_budget=stopped,
            interrupted=interrupted,
            history=best[3],
        )

    def _run_restart(self, model, images, labels, target, deadline, restart) -> dict:
        optimizer = self.optimizer([images])
        scheduler = self.scheduler(optimizer, self.iterations) if self.scheduler else None
        state = {"evaluations": 0, "distance": math.inf}
        history: list[float] = []
        nonfinite = False
        stopped = False
        interrupted = False

        def closure() -> torch.Tensor:
            total, distance = self.objective(model, images, labels, target)
            # Only the images need a gradient; autograd.grad leaves the model's .grad alone.
            (gradient,) = torch.autograd.grad(total, [images])
            images.grad = gradient.sign() if self.signed else gradient
            state["evaluations"] += 1
            state["distance"] = float(distance.detach())
            return total.detach()

        progress = tqdm(range(self.iterations), desc=f"restart {restart}", leave=False, disable=None)
        done = 0
        last_finite = images.detach().clone()
        for step in progress:
            if time.perf_counter() >= deadline:
                stopped = True
                break
            try:
                loss = optimizer.step(closure)
            except KeyboardInterrupt:
                # Keep the last complete iterate; the task records it and then stops.
                interrupted = True
                with torch.no_grad():
                    images.copy_(last_finite)
                log.warning("interrupted at step %d of restart %d; keeping the best result so far", step, restart)
                break
            if not (math.isfinite(float(loss)) and math.isfinite(state["distance"]) and bool(torch.isfinite(images).all())):
                # Diverged: fall back to the last finite iterate and stop this restart.
                nonfinite = True
                log.warning("restart %d diverged at step %d; keeping its last finite iterate", restart, step)
                with torch.no_grad():
                    images.copy_(last_finite)
                break
            if self.box:
                with torch.no_grad():
                    images.clamp_(0, 1)
            if scheduler is not None:
                scheduler.step()
            last_finite = images.detach().clone()
            done = step + 1
            history.append(state["distance"])
            progress.set_postfix(distance=f"{state['distance']:.3g}")
            if self.log_every and done % self.log_every == 0:
                log.info("restart %d step %d: gradient distance %.4g", restart, done, state["distance"])
        progress.close()
        # Score the iterate we keep exactly, without priors: restarts compete on this number.
        final = images.detach().clone()
        distance = float(self.objective(model, final, labels, target)[1].detach())
        state["evaluations"] += 1
        return {
            "images": final,
            "distance": distance if math.isfinite(distance) else math.inf,
            "iterations": done,
            "evaluations": state["evaluations"],
            "nonfinite": nonfinite,
            "stopped": stopped,
            "interrupted": interrupted,
            "history": history,
        }
