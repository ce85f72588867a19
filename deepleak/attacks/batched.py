"""Restarts of one gradient-inversion attack as one batched computation.

:class:`~deepleak.attacks.inversion.GradientInversion` runs its R restarts one after another.
They are independent: R dummy batches of K images, each matched against the same shared
gradient. Here they run together: ``torch.func.vmap`` maps the per-restart objective

    x_r -> distance(grad_theta CE(model(x_r), y), g) + sum(priors(x_r))

and its image gradient (``torch.func.grad`` of ``torch.func.grad``: the double backward)
over a leading restart axis, so every layer runs once on R x K images instead of R times on
K. The optimiser steps the stacked (R, K, C, H, W) tensor; an elementwise optimiser (Adam,
SGD) with a shared schedule then moves each restart exactly as it would alone, so the result
equals the sequential one for the same seed (tests/test_batched.py checks this to float
tolerance). Restarts that diverge are frozen at their last finite iterate, as the sequential
loop stops them.

What it refuses, each with one DeepleakError: L-BFGS (its line search couples all variables,
so restarts would no longer be independent), priors that read activations (``attach``),
group consistency, attacks that optimise the labels and subclasses with an objective of
their own (snapshots). Batch norm in train mode runs on
batch statistics of each restart's own K images; its running statistics (which a train-mode
forward pass would update, and which vmap cannot update in place) are dropped from the
attacker's copy: they never enter a train-mode output.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation

log = logging.getLogger(__name__)


def check_batchable(attack) -> None:
    """Raise a DeepleakError when ``attack``'s restarts cannot run as one batch (callable at
    construction: it needs the settings only)."""
    from deepleak.attacks.inversion import GradientInversion

    for method in ("matching_distance", "objective", "prepare", "loss_labels"):
        if getattr(type(attack), method, None) is not getattr(GradientInversion, method, None):
            # A subclass with its own objective (snapshots, DLG's labels): batching it would
            # silently optimise GradientInversion's instead.
            raise DeepleakError(
                f"batched restarts support GradientInversion's own objective; {type(attack).__name__} "
                f"overrides {method}; run its restarts sequentially"
            )
    if getattr(attack.optimizer, "func", attack.optimizer) is torch.optim.LBFGS:
        raise DeepleakError("batched restarts need an elementwise optimiser (Adam, SGD): L-BFGS couples the restarts")
    if getattr(attack, "group", None) is not None:
        raise DeepleakError("batched restarts do not support group consistency (attack.group); run them sequentially")
    if getattr(attack, "optimises_labels", False):
        raise DeepleakError("batched restarts do not support attacks that optimise the labels; run them sequentially")
    if not getattr(getattr(attack, "image_gradient", None), "exact", True):
        raise DeepleakError("batched restarts use the exact double backward; set attack/image_gradient=double_backward")
    if not hasattr(attack.distance, "functional"):
        raise DeepleakError(
            f"batched restarts need a distance with a functional form; {type(attack.distance).__name__} has none"
        )
    for name, prior in attack.priors.items():
        if hasattr(prior, "attach"):
            raise DeepleakError(
                f"batched restarts do not support the {name} prior: it reads the model's activations; run restarts sequentially"
            )


def drop_train_bn_statistics(model: nn.Module) -> nn.Module:
    """Remove the running statistics of batch-norm layers in train mode (in place).

    A train-mode BN layer normalises with the batch's own statistics and only *updates* its
    running ones, in place, which vmap cannot do on a batched input. Eval-mode layers read
    their running statistics and are left alone."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
            module.track_running_stats = False
    return model


class BatchedObjective:
    """The attack's objective over R restarts at once.

    ``__call__(images (R, K, C, H, W), labels)`` returns (image gradient (R, K, C, H, W),
    total (R,), distance (R,)); ``distance(images, labels)`` the distance (R,) without priors.
    """

    def __init__(self, model: nn.Module, target: list[torch.Tensor], distance, priors) -> None:
        self.model = model
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.buffers = dict(model.named_buffers())
        self.target = target
        self.distance_fn = distance.functional
        self.priors = list(priors.values())

        def matching(images, labels):
            def loss(params):
                logits = functional_call(self.model, (params, self.buffers), (images,))
                return F.cross_entropy(logits, labels)

            candidate = grad(loss)(self.params)
            return self.distance_fn([candidate[name] for name in self.params], self.target)

        def objective(images, labels):
            value = matching(images, labels)
            total = value
            for prior in self.priors:
                total = total + prior(images)
            return total, value

        self._step = vmap(grad_and_value(objective, has_aux=True), in_dims=(0, None))
        self._distance = vmap(matching, in_dims=(0, None))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        gradient, (total, distance) = self._step(images, labels)
        return gradient, total, distance

    def distance(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._distance(images, labels)


def reconstruct_batched(attack, observation: Observation, labels: torch.Tensor, seed: int = 0):
    """What ``attack.reconstruct(observation, labels, seed)`` returns, with the restarts run
    as one batch. ``attack`` is a GradientInversion with an elementwise optimiser."""
    from deepleak.attacks.inversion import Reconstruction

    check_batchable(attack)
    model, target, device = attack.prepare(observation)
    drop_train_bn_statistics(model)
    labels = labels.to(device)
    shape = (len(labels), *observation.recipe.image_shape)
    restarts = attack.restarts
    generator = torch.Generator().manual_seed(seed)
    # Drawn restart by restart from one generator, as the sequential loop draws them.
    images = torch.stack([torch.rand(shape, generator=generator) for _ in range(restarts)]).to(device)
    variables = images.requires_grad_(True)
    optimizer = attack.optimizer([variables])
    if isinstance(optimizer, torch.optim.LBFGS):
        raise DeepleakError("batched restarts need an elementwise optimiser (Adam, SGD): L-BFGS couples the restarts")
    cap = getattr(attack, "max_evaluations", None)
    steps = attack.iterations if cap is None else max(1, min(attack.iterations, cap // restarts))
    scheduler = attack.scheduler(optimizer, steps) if attack.scheduler else None
    objective = BatchedObjective(model, target, attack.distance, attack.priors)

    start = time.perf_counter()
    deadline = start + attack.budget_s if attack.budget_s else math.inf
    active = torch.ones(restarts, dtype=torch.bool, device=device)
    done = torch.zeros(restarts, dtype=torch.int64, device=device)
    evaluations = torch.zeros(restarts, dtype=torch.int64, device=device)
    history: list[torch.Tensor] = []
    last_finite = variables.detach().clone()
    stopped = interrupted = False
    for step in range(steps):
        if time.perf_counter() >= deadline:
            stopped = True
            break
        try:
            gradient, total, distance = objective(variables.detach(), labels)
            variables.grad = gradient.sign() if attack.signed else gradient
            optimizer.step()
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted at step %d of the batched restarts; keeping the best result so far", step)
            break
        with torch.no_grad():
            evaluations += active
            finite = torch.isfinite(total) & torch.isfinite(distance) & torch.isfinite(variables).flatten(1).all(dim=1)
            active = active & finite
            # Frozen restarts (diverged now or before) keep their last finite iterate.
            keep = active.view(-1, *([1] * (variables.dim() - 1)))
            variables.copy_(torch.where(keep, variables, last_finite))
            if attack.box:
                variables.clamp_(0, 1)
            last_finite = variables.detach().clone()
            done += active
            history.append(torch.where(active, distance.detach(), torch.full_like(distance, math.nan)))
        if scheduler is not None:
            scheduler.step()
        if attack.log_every and (step + 1) % attack.log_every == 0:
            # Read back from the device only here, not every step.
            log.info("batched restarts step %d: best gradient distance %.4g, %d of %d restarts active",
                     step + 1, float(distance.min()), int(active.sum()), restarts)
    final = last_finite
    with torch.no_grad():
        scores = objective.distance(final, labels).detach()
    scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, math.inf)).cpu()
    distances = [float(s) for s in scores]
    best = int(torch.argmin(scores))  # the first of equals, as the sequential comparison
    nonfinite = int((~active).sum())
    if nonfinite:
        log.warning("%d of %d batched restarts diverged; each keeps its last finite iterate", nonfinite, restarts)
    done_list = done.cpu().tolist()
    curve = torch.stack(history).cpu() if history else torch.zeros(0, restarts)
    return Reconstruction(
        images=final[best].detach().clamp(0, 1).cpu(),
        labels=labels.cpu(),
        gradient_distance=distances[best],
        restart_distances=distances,
        best_restart=best,
        iterations=int(sum(done_list)),
        evaluations=int(evaluations.sum()) + restarts,
        seconds=time.perf_counter() - start,
        nonfinite_restarts=nonfinite,
        stopped_by_budget=stopped,
        interrupted=interrupted,
        history=[float(v) for v in curve[: done_list[best], best]],
    )
