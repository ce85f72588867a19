"""Gradient inversion: optimise dummy images until their gradient matches the shared one.

The attacker's side of the threat model: :meth:`GradientMatching.reconstruct` receives an
Observation (public model, recipe, shared gradient) and the restored labels, never the
private batch. Labels stay fixed (hard labels) during the optimisation, except in attacks
that optimise them (``optimises_labels``, e.g. :class:`deepleak.attacks.dlg.DLG`; the result
then says ``labels_from_attack``).

The parts (distance, priors, optimiser, schedule) come from config, an optional
:class:`~deepleak.attacks.parts.group.GroupConsistency` runs G candidates per restart, and
the restarts run in the shared loop (:mod:`deepleak.attacks.loop`), competing on the
gradient distance.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from deepleak.attacks.engine.batched_restarts import check_batchable, reconstruct_batched
from deepleak.attacks.engine.conv_kernels import check_choice, choose, conv_kernels
from deepleak.attacks.engine.image_gradient import CHECK_SEED_OFFSET, DoubleBackward, FiniteDifference
from deepleak.attacks.loop import (
    Limits, Restart, check_loop_settings, deadline, descend, planned_steps, restart_cap, run_restarts,
)
from deepleak.attacks.parts.defence_model import DefenceModel
from deepleak.attacks.parts.defence_view import attacker_defence_model, check_attack_route
from deepleak.attacks.parts.group import GroupConsistency
from deepleak.attacks.parts.prior import attach_priors, detach_priors, group_priors
from deepleak.attacks.parts.protocols import Distance, Prior
from deepleak.attacks.result import Reconstruction
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import set_bn_mode

log = logging.getLogger(__name__)


class GradientMatching:
    """Minimise ``distance(grad L(x, y), g) + sum(priors(x))`` over dummy images x.

    - ``optimizer``: a partial that takes the parameter list (e.g. torch.optim.LBFGS).
    - ``scheduler``: optional partial taking (optimizer, planned steps).
    - ``iterations``: optimiser steps per restart (for L-BFGS one step runs up to
      ``max_iter`` evaluations).
    - ``restarts``: independent random starts; the one with the smallest gradient distance
      wins.
    - ``signed``: replace the variables' gradient by its sign (Inverting Gradients).
    - ``box``: clamp the images to [0, 1] after every step.
    - ``budget_s``: wall-clock cap for the whole reconstruction; the best result so far is kept.
    - ``group``: optional group consistency (G candidates per restart, see
      :mod:`deepleak.attacks.parts.group`).
    - ``max_evaluations``: cap on the gradient evaluations of the optimisation over all
      restarts and group members, split evenly between restarts (scoring the kept iterate
      is not counted). Recipes with different optimisers get equal budgets this way.
    - ``batched_restarts``: run all restarts as one torch.func.vmap computation
      (:mod:`deepleak.attacks.engine.batched_restarts`; elementwise optimisers, no group, no BN prior).
    - ``adaptive``: attack through the client's public defence (the observation's
      ``defence``; :class:`~deepleak.attacks.parts.defence_model.DefenceModel`: its
      likelihood, the surviving entries, the clipping); false: the naive attacker, who
      matches the defended update as if it were the plain one.
    - ``image_gradient``: how the step differentiates the gradient distance with respect to
      the images (:mod:`deepleak.attacks.engine.image_gradient`): the exact double backward (default)
      or finite differences of first-order input gradients (ReLU and max-pool kinks frozen; 1.8-2.8x a
      training step instead of 3.3-4.4x).

    When the budget or the cap cuts a step short (inside an L-BFGS line search), the step is
    undone: the restart keeps the iterate it started the step from.
    """

    optimises_labels = False  # True: the labels are variables; Reconstruction.labels are the attack's own

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
        group: GroupConsistency | None = None,
        max_evaluations: int | None = None,
        batched_restarts: bool = False,
        image_gradient: DoubleBackward | FiniteDifference | None = None,
        conv_kernels: str = "onednn",
        adaptive: bool = True,
    ) -> None:
        check_loop_settings(iterations, restarts, budget_s, max_evaluations, group.size if group is not None else 1)
        self.conv_kernels = check_choice(conv_kernels)
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
        self.group = group
        self.max_evaluations = max_evaluations
        self.batched_restarts = batched_restarts
        self.image_gradient = image_gradient if image_gradient is not None else DoubleBackward()
        self.adaptive = bool(adaptive)
        self.defence_model: DefenceModel | None = None  # set by prepare() from the observation's public defence
        if not self.image_gradient.exact and self.overridden_objective() == "matching_distance":
            # The finite-difference route evaluates GradientMatching's distance; a subclass
            # with a distance of its own (snapshots) would silently get the wrong gradient.
            raise DeepleakError(
                f"attack.image_gradient={self.image_gradient.name} supports GradientMatching's own distance; "
                f"{type(self).__name__} overrides it; use attack/image_gradient=double_backward"
            )
        if batched_restarts:
            check_batchable(self)

    def check_defence(self, public: Mapping[str, Any]) -> None:
        """Refuse, before any work, a defence this attack cannot attack as configured
        (:class:`~deepleak.attacks.parts.protocols.DefenceAware`)."""
        check_attack_route(self.image_gradient.exact, self.batched_restarts, dict(public), self.adaptive)
        if public.get("name", "none") != "none" and self.overridden_objective() == "matching_distance":
            raise DeepleakError(f"{type(self).__name__} has an objective of its own and does not model defences; "
                                "use defence=none")

    def overridden_objective(self) -> str | None:
        """The first of GradientMatching's objective methods that this attack's class overrides
        (snapshots: matching_distance and prepare; DLG: loss_labels); None for its own."""
        own = type(self)
        for name, method, base in (
            ("matching_distance", own.matching_distance, GradientMatching.matching_distance),
            ("objective", own.objective, GradientMatching.objective),
            ("prepare", own.prepare, GradientMatching.prepare),
            ("loss_labels", own.loss_labels, GradientMatching.loss_labels),
        ):
            if method is not base:
                return name
        return None

    # ------------------------------------------------------------------ the objective
    def matching_distance(self, model, images: torch.Tensor, labels: torch.Tensor, target) -> torch.Tensor:
        """Distance between the candidate's gradient at ``model`` and ``target``; keeps the graph.

        ``labels``: class indices (K,) or class probabilities (K, N) (soft labels)."""
        defence = self.defence_model
        if defence is not None and defence.modifies:  # the adaptive attacker's objective
            return defence.distance(defence.candidate_gradient(model, images, labels), target, self.distance)
        loss = F.cross_entropy(model(images), labels)
        candidate = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        return self.distance(list(candidate), target)

    def objective(self, model, images: torch.Tensor, labels: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, gradient distance) for candidate ``images``; both keep the graph.

        The priors run after the matching forward pass, whose activations the BN prior reads."""
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
        # The image-gradient route prepares the copy (DoubleBackward: the wide convolutions
        # skip a weight adjoint the double backward never uses, ResNet-18 step -5..-10%,
        # scripts/bench.py; FiniteDifference: refuses layers with kinks).
        model = self.image_gradient.prepare_model(
            set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode))
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        device = next(model.parameters()).device
        return model, [g.to(device) for g in observation.gradient], device

    # ------------------------------------------------------------------ label hooks (DLG)
    def label_variables(self, labels: torch.Tensor, num_classes: int, members: int,
                        generator: torch.Generator, device: torch.device) -> torch.Tensor | None:
        """Extra variables for the labels, (G, K, ...); None: the labels stay fixed."""
        return None

    def loss_labels(self, labels: torch.Tensor, variables: torch.Tensor | None) -> torch.Tensor:
        """What the cross-entropy of one member uses: the fixed labels here."""
        return labels

    def answer_labels(self, labels: torch.Tensor, variables: torch.Tensor | None) -> torch.Tensor:
        """The labels reported with one member's images: the fixed labels here."""
        return labels

    # ------------------------------------------------------------------ the attack
    def reconstruct(self, observation: Observation, labels: torch.Tensor, seed: int = 0) -> Reconstruction:
        """Reconstruct the K images behind ``observation`` given K ``labels``."""
        # The attacker's model of the client's defence (from its public parameters only),
        # which matching_distance goes through; set before any subclass's prepare runs.
        self.defence_model = attacker_defence_model(observation, self.adaptive)
        if self.batched_restarts:
            # All restarts as one vmapped computation (same result as the loop below). Its
            # batches are R x K images, oneDNN's strength: auto keeps it without timing, and
            # channels_last runs NCHW (vmap's batched convolutions copy their inputs into it).
            kernels = "native" if self.conv_kernels == "native" else "onednn"
            if self.conv_kernels not in ("onednn", kernels):
                log.info("conv_kernels=%s: batched restarts run on oneDNN kernels in NCHW", self.conv_kernels)
            with conv_kernels(kernels):
                result = reconstruct_batched(self, observation, labels, seed)
            if self.conv_kernels != "onednn":
                result.extras["conv_kernels"] = kernels
            return result
        model, target, device = self.prepare(observation)
        labels = labels.to(device)
        members = self.group.size if self.group is not None else 1
        shape = (members, len(labels), *observation.recipe.image_shape)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        cap = restart_cap(self.max_evaluations, self.restarts)
        limits = Limits(planned_steps(self.iterations, cap, members), deadline(self.budget_s, start), cap)

        def restart(index: int) -> Restart:
            images = torch.rand(shape, generator=generator).to(device).requires_grad_(True)
            label_vars = self.label_variables(labels, observation.recipe.num_classes, members, generator, device)
            return self._restart(model, images, label_vars, labels, target, limits, index)

        inactive = attach_priors(self.priors, model)
        try:
            agreement = self.check_image_gradient(model, labels, target, observation, seed, device)
            kernels = self.choose_kernels(model, labels, target, observation, seed, device)
            with conv_kernels(kernels, model):
                restarts = run_restarts(self.restarts, restart, limits.deadline)
        finally:
            detach_priors(self.priors)
        best = restarts.best.answer
        extras: dict[str, Any] = {}
        if agreement is not None:
            extras.update(image_gradient_agreement=agreement, image_gradient_step=self.image_gradient.current_step)
        if self.conv_kernels != "onednn":
            extras["conv_kernels"] = kernels  # the CPU kernels the restarts ran on
        if self.group is not None:
            extras["member_distances"] = best["member_distances"]  # the chosen restart's members' final distances
        extras["defence_attack"] = self.defence_model.record()
        return restarts.reconstruction(
            best["images"], best["labels"], start,
            inactive_priors=inactive,
            prior_values=best["prior_values"],
            labels_from_attack=self.optimises_labels,
            extras=extras,
        )

    def _restart(self, model, images, label_vars, labels, target, limits: Limits, index: int) -> Restart:
        """One restart from ``images`` (G, K, C, H, W) and ``label_vars`` (G, K, ...) or None:
        the shared descent, then the kept iterate scored."""
        variables = [images] if label_vars is None else [images, label_vars]
        optimizer = self.optimizer(variables)
        # Each step costs at least one evaluation per member: under a cap the schedule is
        # planned for the most steps the restart can take.
        scheduler = self.scheduler(optimizer, limits.steps) if self.scheduler else None
        anchor: list[torch.Tensor | None] = [None]  # group consistency: the members' detached mean

        def before_step(step: int) -> None:
            if self.group is not None and self.group.refresh_due(step):
                anchor[0] = self.group.anchor(images)

        def evaluate() -> tuple[torch.Tensor, list[float]]:
            total, distances, gradients = self._evaluate(model, images, label_vars, labels, target, anchor[0])
            for variable, gradient in zip(variables, gradients):
                variable.grad = gradient
            return total, distances

        descent = descend(optimizer, evaluate, variables, limits, cost=images.shape[0], signed=self.signed,
                          box=self.box, scheduler=scheduler, before_step=before_step, what=f"restart {index}",
                          log_every=self.log_every)
        final_vars = None if label_vars is None else label_vars.detach().clone()
        scored = self._score(model, images.detach().clone(), final_vars, labels, target)
        return Restart(scored["distance"], descent, scored, scored["evaluations"])

    def check_image_gradient(self, model, labels, target, observation: Observation, seed: int, device) -> float | None:
        """The finite-difference route's start-up check (None for the exact route): calibrate
        its step against the exact image gradient on a random draw of its own, and refuse a
        victim on which finite differences are meaningless, before any work. Returns the
        agreement (cosine)."""
        if self.image_gradient.exact:
            return None
        images, label_vars = self._probe(labels, observation, 1, seed, device)
        variables = [images[0]] + ([] if label_vars is None else [label_vars[0]])
        agreement, step = self.image_gradient.check(model, variables, self._loss(labels), self.distance, target)
        log.info("finite-difference image gradient: step %.2g, cosine %.6f to the exact one", step, agreement)
        return agreement

    def choose_kernels(self, model, labels, target, observation: Observation, seed: int, device) -> str:
        """The CPU convolution kernels the restarts run on (:mod:`deepleak.attacks.engine.conv_kernels`):
        ``conv_kernels`` itself, or for ``auto`` the faster for one evaluation of this attack
        on a random draw of its own (the restarts' random stream is untouched)."""
        if self.conv_kernels != "auto":
            return self.conv_kernels
        members = self.group.size if self.group is not None else 1
        images, label_vars = self._probe(labels, observation, members, seed, device)
        images.requires_grad_(True)
        anchor = self.group.anchor(images) if self.group is not None else None
        kernels = choose("auto", lambda: self._evaluate(model, images, label_vars, labels, target, anchor), device, model)
        log.info("conv_kernels=auto: convolutions on %s kernels", kernels)
        return kernels

    def _probe(self, labels, observation: Observation, members: int, seed: int, device):
        """(images (members, K, ...), label variables or None): the start-up checks' random
        draw, from a generator of their own (seed + CHECK_SEED_OFFSET)."""
        generator = torch.Generator().manual_seed(seed + CHECK_SEED_OFFSET)
        label_vars = self.label_variables(labels, observation.recipe.num_classes, members, generator, device)
        images = torch.rand(members, len(labels), *observation.recipe.image_shape, generator=generator).to(device)
        return images, label_vars

    def _loss(self, labels: torch.Tensor):
        """loss(forward, [images, label variables?]): the victim's loss, as the
        finite-difference route evaluates it at moved parameters."""
        def loss(forward, variables):
            return F.cross_entropy(forward(variables[0]), self.loss_labels(labels, variables[1] if len(variables) > 1 else None))
        return loss

    def _evaluate(self, model, images, label_vars, labels, target, anchor) -> tuple[torch.Tensor, list[float], list[torch.Tensor]]:
        """(total objective, [distance of each member], gradient for images (and label_vars))."""
        variables = [images] if label_vars is None else [images, label_vars]
        if self.image_gradient.exact:
            total, distances = self._members_objective(model, images, label_vars, labels, target, anchor)
            # Only the variables need a gradient; autograd.grad leaves the model's .grad alone.
            return total.detach(), [float(d.detach()) for d in distances], list(torch.autograd.grad(total, variables))
        loss = self._loss(labels)
        # Priors that read the model's activations run after the pass at theta; priors of the
        # images alone add their closed-form gradient (TV) or else ride in the finite-difference
        # passes (no backward pass of their own either way).
        groups = group_priors(self.priors)
        closed = list(groups.closed_form.values())
        extra = self._prior_sum(list(groups.reads_model))
        image_extra = self._prior_sum(list(groups.of_images))
        total, distances, per_member = 0.0, [], []
        for g in range(images.shape[0]):
            distance, prior, member_gradients = self.image_gradient.value_and_gradient(
                model, [v[g] for v in variables], loss, self.distance, target, extra, image_extra)
            for closed_form in closed:
                value, gradient = closed_form.value_and_gradient(images[g].detach())
                member_gradients[0].add_(gradient)
                prior += float(value)
            per_member.append(member_gradients)
            total += distance + prior
            distances.append(distance)
        gradients = [torch.stack(parts) for parts in zip(*per_member)]
        total = images.new_tensor(total)
        if self.group is not None:
            term = self.group(images, anchor)
            if term.requires_grad:
                gradients[0] = gradients[0] + torch.autograd.grad(term, images)[0]
            total = total + term.detach()
        return total, distances, gradients

    def _prior_sum(self, names: list[str]) -> Prior | None:
        """images -> the sum of the named priors; None for no names."""
        if not names:
            return None
        priors = [self.priors[name] for name in names]

        def total(images: torch.Tensor) -> torch.Tensor:
            value = priors[0](images)
            for prior in priors[1:]:
                value = value + prior(images)
            return value
        return total

    def _members_objective(self, model, images, label_vars, labels, target, anchor):
        """(total over the G members + group term, [distance of each member])."""
        total = images.new_zeros(())
        distances = []
        for g in range(images.shape[0]):
            member_labels = self.loss_labels(labels, None if label_vars is None else label_vars[g])
            member_total, distance = self.objective(model, images[g], member_labels, target)
            total = total + member_total
            distances.append(distance)
        if self.group is not None:
            total = total + self.group(images, anchor)
        return total, distances

    def _score(self, model, images, label_vars, labels, target) -> dict:
        """Score the kept iterate without priors (restarts compete on this distance) and
        choose the restart's answer: {distance, member_distances, images (K, ...), labels,
        prior_values (each prior's value on the answer), evaluations}."""
        def evaluate(x, variables):
            distance = self.matching_distance(model, x, self.loss_labels(labels, variables), target)
            # Right after the matching forward pass, which the BN prior reads.
            priors = {name: float(prior(x).detach()) for name, prior in self.priors.items()}
            value = float(distance.detach())
            return (value if math.isfinite(value) else math.inf), priors

        scored = [evaluate(images[g], None if label_vars is None else label_vars[g]) for g in range(len(images))]
        per_member = [distance for distance, _ in scored]
        evaluations = len(images)
        if self.group is not None and self.group.choose == "mean":
            chosen_vars = None if label_vars is None else label_vars.mean(dim=0)
            chosen = images.mean(dim=0)
            distance, priors = evaluate(chosen, chosen_vars)
            evaluations += 1
        else:
            index = self.group.select(per_member) if self.group is not None else 0
            chosen, chosen_vars = images[index], None if label_vars is None else label_vars[index]
            distance, priors = scored[index]
        return {"distance": distance, "member_distances": per_member, "images": chosen,
                "labels": self.answer_labels(labels, chosen_vars), "prior_values": priors, "evaluations": evaluations}
