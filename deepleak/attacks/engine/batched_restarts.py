"""Restarts of one gradient-inversion attack as one batched computation.

:class:`~deepleak.attacks.gradient_matching.GradientMatching` runs its R restarts one after another.
They are independent: R dummy batches of K images, each matched against the same shared
gradient. Here they run together: ``torch.func.vmap`` maps the per-restart objective

    x_r -> distance(grad_theta CE(model(x_r), y), g) + sum(priors(x_r))

and its image gradient (``torch.func.grad`` of ``torch.func.grad``: the double backward)
over a leading restart axis, so every layer runs once on R x K images instead of R times on
K (a prior with a closed-form gradient, TV, is added outside vmap, for all restarts in one
go). The optimiser steps the stacked (R, K, C, H, W) tensor; an elementwise optimiser (Adam,
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

With ``attack/image_gradient=finite_difference`` (:class:`BatchedFiniteDifference`) the
image gradient of each restart is the difference of two first-order input gradients, at
theta and at theta + e_r u_r (u_r = dD/dg of restart r, e_r its own step), instead of the
double backward: the same formula as the sequential route, calibrated by the same check
before the first step, and with the same result to the float rounding the difference
quotient amplifies. Its victims must be smooth: the ReLU and max-pool kinks that the
sequential route freezes between its passes cannot be recorded under vmap, so they are
refused.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from deepleak.attacks.engine.image_gradient import DoubleBackward, FiniteDifference, norm
from deepleak.attacks.loop import deadline, planned_steps
from deepleak.attacks.parts.prior import group_priors
from deepleak.attacks.parts.protocols import FunctionalDistance, RestartDirectionalDistance
from deepleak.attacks.result import Reconstruction
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation

log = logging.getLogger(__name__)


class BatchableAttack(Protocol):
    """What the batched restarts read of an attack (a GradientMatching): its settings, its
    objective's parts and the two hooks below."""

    distance: Callable
    optimizer: Callable[..., torch.optim.Optimizer]
    priors: dict[str, Callable]
    scheduler: Callable | None
    iterations: int
    restarts: int
    signed: bool
    box: bool
    budget_s: float | None
    log_every: int
    group: object | None
    max_evaluations: int | None
    optimises_labels: bool
    image_gradient: DoubleBackward | FiniteDifference

    def overridden_objective(self) -> str | None:
        """The first objective method of GradientMatching's that the attack's class overrides
        (None: the objective is GradientMatching's own, which the batch computes)."""

    def prepare(self, observation: Observation) -> tuple[nn.Module, list[torch.Tensor], torch.device]:
        """(model copy, target gradient, device)."""

    def check_image_gradient(self, model, labels, target, observation: Observation, seed: int, device) -> float | None:
        """The finite-difference route's calibration and agreement (None for the exact route)."""


def _optimizer_class(factory: Callable[..., torch.optim.Optimizer]) -> object:
    """The optimiser class behind ``factory`` (a class or a functools.partial of one)."""
    return factory.func if isinstance(factory, functools.partial) else factory


def check_batchable(attack: BatchableAttack) -> None:
    """Raise a DeepleakError when ``attack``'s restarts cannot run as one batch (callable at
    construction: it needs the settings only)."""
    method = attack.overridden_objective()
    if method is not None:
        # A subclass with its own objective (snapshots, DLG's labels): batching it would
        # silently optimise GradientMatching's instead.
        raise DeepleakError(
            f"batched restarts support GradientMatching's own objective; {type(attack).__name__} "
            f"overrides {method}; run its restarts sequentially"
        )
    if _optimizer_class(attack.optimizer) is torch.optim.LBFGS:
        raise DeepleakError("batched restarts need an elementwise optimiser (Adam, SGD): L-BFGS couples the restarts")
    if attack.group is not None:
        raise DeepleakError("batched restarts do not support group consistency (attack.group); run them sequentially")
    if attack.optimises_labels:
        raise DeepleakError("batched restarts do not support attacks that optimise the labels; run them sequentially")
    route = attack.image_gradient
    if not route.exact and not isinstance(route, FiniteDifference):
        raise DeepleakError(
            f"batched restarts support the double_backward and finite_difference image gradients, not {type(route).__name__}"
        )
    if not isinstance(attack.distance, FunctionalDistance):
        raise DeepleakError(
            f"batched restarts need a distance with a functional form; {type(attack.distance).__name__} has none"
        )
    reading = list(group_priors(attack.priors).reads_model)
    if reading:
        raise DeepleakError(
            f"batched restarts do not support the {reading[0]} prior: it reads the model's activations; run restarts sequentially"
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
    """The attack's objective over R restarts at once, its image gradient by the double backward.

    ``__call__(images (R, K, C, H, W), labels)`` returns (image gradient (R, K, C, H, W),
    total (R,), distance (R,)); ``distance(images, labels)`` the distance (R,) without priors.
    """

    def __init__(self, model: nn.Module, target: list[torch.Tensor], distance, priors) -> None:
        self.model = model
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.buffers = dict(model.named_buffers())
        self.target = target
        self.distance_fn = distance.functional
        # Priors with a closed-form gradient (TV) take it over all restarts at once, outside
        # vmap (LeNet batch 8, 16 restarts, one thread: TV cost 7.9 ms per step under vmap);
        # the others are differentiated under vmap with the rest of the objective.
        closed = group_priors(priors).closed_form
        self.closed = list(closed.values())
        self.others = [prior for name, prior in priors.items() if name not in closed]
        self._step = vmap(grad_and_value(self._objective, has_aux=True), in_dims=(0, None))
        self._distance = vmap(self._matching, in_dims=(0, None))

    def _loss(self, params, images, labels):
        """The victim's loss of one restart's K images at ``params``."""
        return F.cross_entropy(functional_call(self.model, (params, self.buffers), (images,)), labels)

    def _matching(self, images, labels):
        candidate = grad(self._loss)(self.params, images, labels)
        return self.distance_fn([candidate[name] for name in self.params], self.target)

    def _prior(self, images):
        """The priors without a closed form, of one restart's images."""
        total = 0.0
        for prior in self.others:
            total = total + prior(images)
        return total

    def _objective(self, images, labels):
        value = self._matching(images, labels)
        return value + self._prior(images), value

    def _add_closed(self, images: torch.Tensor, gradient: torch.Tensor, total: torch.Tensor):
        """(gradient, total) plus each closed-form prior's gradient and value, for every restart at once."""
        for prior in self.closed:
            value, prior_gradient = prior.value_and_gradient(images, leading=1)
            gradient, total = gradient.add_(prior_gradient), total + value
        return gradient, total

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        gradient, (total, distance) = self._step(images, labels)
        gradient, total = self._add_closed(images, gradient, total)
        return gradient, total, distance

    def distance(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._distance(images, labels)


class BatchedFiniteDifference(BatchedObjective):
    """The attack's objective over R restarts at once, each restart's image gradient by
    ``route`` (a calibrated :class:`~deepleak.attacks.engine.image_gradient.FiniteDifference`):

        u_r = dD/dg at g_r = grad_theta L(x_r; theta),   e_r = step ||theta|| / ||u_r||
        forward:  (grad_x L(x_r; theta + e_r u_r) - grad_x L(x_r; theta)) / e_r
        central:  (grad_x L(x_r; theta + e_r u_r) - grad_x L(x_r; theta - e_r u_r)) / (2 e_r)

    Two (three) first-order passes over all R x K images instead of the double backward."""

    def __init__(self, model: nn.Module, target: list[torch.Tensor], distance, priors, route: FiniteDifference) -> None:
        super().__init__(model, target, distance, priors)
        self.route = route
        self.theta_norm = float(norm(list(self.params.values()))) or 1.0
        self.names = list(self.params)
        self._at_theta = vmap(grad(self._loss, argnums=(0, 1)), in_dims=(None, 0, None))
        self._moved = vmap(grad(self._loss, argnums=1), in_dims=(0, 0, None))
        self._prior_step = vmap(grad_and_value(self._prior)) if self.others else None
        # dD/dg of every restart at once in closed form (L2, cosine: a few passes over the
        # stacked gradients), else by autograd under vmap.
        closed_form = isinstance(distance, RestartDirectionalDistance)
        self._direction = distance.restart_direction if closed_form else self._direction_by_autograd

    def _direction_by_autograd(self, candidate: list[torch.Tensor], target: list[torch.Tensor]):
        direction, value = vmap(grad_and_value(self.distance_fn), in_dims=(0, None))(candidate, target)
        return value, direction

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        # The pass at theta: each restart's parameter gradient g_r and image gradient.
        params, inputs = self._at_theta(self.params, images, labels)
        names = self.names
        distance, direction = self._direction([params[name] for name in names], self.target)
        u_norm = torch.stack([u.flatten(1).norm(dim=1) for u in direction]).norm(dim=0)  # (R,)
        usable = (u_norm > 0) & torch.isfinite(u_norm)
        e = torch.where(usable, self.route.current_step * self.theta_norm / u_norm, torch.ones_like(u_norm))

        def moved(sign: float) -> torch.Tensor:
            params = {name: torch.addcmul(self.params[name], _per_restart(sign * e, u), u) for name, u in zip(names, direction)}
            return self._moved(params, images, labels)

        if self.route.scheme == "forward":
            gradient = (moved(1.0) - inputs) / _per_restart(e, inputs)
        else:
            gradient = (moved(1.0) - moved(-1.0)) / _per_restart(2 * e, inputs)
        # A stationary distance has no image gradient; a non-finite one is caught by the loop.
        stationary = torch.where(torch.isfinite(u_norm), torch.zeros_like(u_norm), torch.full_like(u_norm, math.nan))
        gradient = torch.where(_per_restart(usable, gradient), gradient, _per_restart(stationary, gradient))
        gradient, total = self._add_closed(images, gradient, distance)
        if self._prior_step is not None:
            prior_gradient, prior = self._prior_step(images)
            gradient, total = gradient.add_(prior_gradient), total + prior
        return gradient, total, distance


def _per_restart(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(R,) values shaped to broadcast over ``like`` (R, ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def reconstruct_batched(attack: BatchableAttack, observation: Observation, labels: torch.Tensor,
                        seed: int = 0) -> Reconstruction:
    """What ``attack.reconstruct(observation, labels, seed)`` returns, with the restarts run
    as one batch. ``attack`` is a GradientMatching with an elementwise optimiser."""
    check_batchable(attack)
    model, target, device = attack.prepare(observation)
    drop_train_bn_statistics(model)
    if device.type == "cpu" and torch.get_num_threads() == 1:
        # Measured on LeNet batch 8, 16 restarts (docs/performance.md, Throughput): 0.87-1.06x per step.
        log.info("batched restarts on one CPU thread: expect about the speed of running them one after another; "
                 "they pay with more threads (threads=N) or on a GPU")
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
    steps = planned_steps(attack.iterations, attack.max_evaluations, restarts)
    scheduler = attack.scheduler(optimizer, steps) if attack.scheduler else None
    route = attack.image_gradient
    if route.exact:
        objective, agreement = BatchedObjective(model, target, attack.distance, attack.priors), None
    else:
        if getattr(model, "_deepleak_kinks", None) is not None:
            raise DeepleakError(
                f"batched restarts with attack/image_gradient=finite_difference need a smooth victim, and {type(model).__name__} "
                f"has ReLU or max-pooling kinks (frozen between the passes only when restarts run one after another); "
                f"set attack.batched_restarts=false"
            )
        agreement = attack.check_image_gradient(model, labels, target, observation, seed, device)
        objective = BatchedFiniteDifference(model, target, attack.distance, attack.priors, route)

    start = time.perf_counter()
    stop_at = deadline(attack.budget_s, start)
    active = torch.ones(restarts, dtype=torch.bool, device=device)
    done = torch.zeros(restarts, dtype=torch.int64, device=device)
    evaluations = torch.zeros(restarts, dtype=torch.int64, device=device)
    history: list[torch.Tensor] = []
    last_finite = variables.detach().clone()
    stopped = interrupted = False
    began = time.perf_counter()
    for step in range(steps):
        # The whole step is guarded: Ctrl-C may land after the optimiser's step too. The answer
        # is last_finite, which only a complete step replaces.
        try:
            if time.perf_counter() >= stop_at:
                stopped = True
                break
            gradient, total, distance = objective(variables.detach(), labels)
            variables.grad = gradient.sign() if attack.signed else gradient
            optimizer.step()
            with torch.no_grad():
                evaluations += active
                finite = torch.isfinite(total) & torch.isfinite(distance) & torch.isfinite(variables).flatten(1).all(dim=1)
                active = active & finite
                # Frozen restarts (diverged now or before) keep their last finite iterate.
                keep = _per_restart(active, variables)
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
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted at step %d of the batched restarts; keeping the best result so far", step)
            break
    final = last_finite
    with torch.no_grad():
        scores = objective.distance(final, labels).detach()
    iteration_seconds = time.perf_counter() - began
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
        iteration_seconds=iteration_seconds,
        nonfinite_restarts=nonfinite,
        stopped_by_budget=stopped,
        interrupted=interrupted,
        history=[float(v) for v in curve[: done_list[best], best]],
        extras={} if agreement is None else {"image_gradient_agreement": agreement,
                                             "image_gradient_step": route.current_step},
    )
