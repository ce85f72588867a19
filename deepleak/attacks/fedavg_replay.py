"""FedAvgReplay: reconstruct a FedAvg client's data by re-running its local training differentiably.

Dimitrov et al., "Data Leakage in Federated Averaging" (TMLR 2022); docs/method.md (image reconstruction). The
attacker simulates the client's E x ceil(N/B) plain-SGD steps from W_0 on dummy images with
the restored labels (fixed) and minimises the distance between the simulated pseudo-gradient
(W_0 - W_T^sim) / (eta T) and the observed one (W_0 - W_T) / (eta T), plus image priors.

The batch order is unknown to the server. Handled as in Dimitrov et al.:

- ``mode='shared'``: each dummy image is one variable used once per epoch; every epoch's
  assignment of dummies to mini-batches is a random permutation drawn from the attack seed
  (any fixed choice is as good as another for the first epoch, since the dummies are free;
  for later epochs it is a guess whose error is second order in eta).
- ``mode='per_epoch'``: every epoch has its own copy of the N dummies (E x N variables), each
  epoch in its own random assignment, and the *epoch-order-invariant prior* pulls the copies
  together: every ``realign_every`` evaluations each copy is matched to the consensus by an
  optimal assignment among images of the same label (Hungarian, on squared distance), and
  ``epoch_prior`` x mean squared distance of the matched copies to their mean is added. The
  output is the consensus (mean of the matched copies); ``epoch_agreement`` is the PSNR of
  each matched copy against it.
- With ``scenario.leak_metadata=true`` the observation carries the per-step labels; the
  assignment then follows them (ambiguous only among same-label images).

The guessed assignment is often the largest error of the replay: each dummy carries its label,
so a guess puts the wrong *labels* together in a step, and no images can make up for that once
the weights travel far (measured: docs/decisions.md, FedAvg replay).
``assignment='learned'`` (deepleak's, shared mode) therefore learns the order first: each
epoch's assignment of the N samples to its ceil(N/B) steps is relaxed to a matrix with row sums
the batch sizes and column sums 1 (Sinkhorn of free logits), every step's loss becomes the
assignment-weighted sum of all N per-sample losses, and the logits are optimised jointly with the
images for ``assignment_iterations`` steps; the matrix is then rounded to the nearest hard
assignment (Hungarian) and the exact replay goes on from the images reached. The relaxed steps
cost N/b times a hard step (all N samples per step), and see batch-norm statistics over all N.

Memory stays flat in T: the forward pass keeps only the weights at every
``checkpoint_every``-th step (default: W_0 alone, or every ceil(sqrt(T)) steps for small
weights); the backward pass walks the steps in reverse, back-propagating through one SGD step
at a time (a vector-Jacobian product through the step's own double backward) and recomputing
the weights it needs by bisection of each segment with at most ``STORED_WEIGHTS`` stored
weight sets (short stretches of small weights are stored whole), and hands freed heap pages
back to the OS after each reverse step of a large model (:mod:`deepleak.attacks.engine.memory`).
Memory and time against E: docs/decisions.md, FedAvg replay. The image gradient equals that of
the fully unrolled graph (tests/attacks/test_fedavg_replay.py and tests/scenarios/test_fedavg.py
check this).

Both phases (the relaxed order, then the exact replay) run in the shared loop
(:mod:`deepleak.attacks.loop`): budget, evaluation cap, interrupts and divergence as in
GradientMatching.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from deepleak.attacks.assignment import batch_sizes, relaxed_assignment, round_assignment, start_logits, step_shares
from deepleak.attacks.engine.image_gradient import CHECK_SEED_OFFSET, DoubleBackward, FiniteDifference
from deepleak.attacks.engine.replay_client import Client, Schedule
from deepleak.attacks.loop import (
    Descent, Limits, Restart, check_loop_settings, deadline, descend, planned_steps, restart_cap,
    run_restarts,
)
from deepleak.attacks.parts.protocols import Distance, Prior
from deepleak.attacks.result import PSNR, Reconstruction
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import set_bn_mode, step_batches

log = logging.getLogger(__name__)

def make_schedule(labels: torch.Tensor, epochs: int, batch_size: int, generator: torch.Generator,
                  copies: bool, step_labels: list[list[int]] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per step: (variable indices, labels). Variables are the N dummies (``copies`` False)
    or E blocks of N (epoch e uses indices e*N .. e*N+N-1). The order is a random permutation
    per epoch, or follows the leaked ``step_labels`` (T lists) when given."""
    n = len(labels)
    schedule = []
    steps_per_epoch = math.ceil(n / batch_size)
    for epoch in range(epochs):
        offset = epoch * n if copies else 0
        if step_labels is not None:
            pools: dict[int, list[int]] = {}
            for i in torch.randperm(n, generator=generator).tolist():
                pools.setdefault(int(labels[i]), []).append(i)
            order = []
            for wanted in step_labels[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]:
                for label in wanted:
                    if not pools.get(int(label)):
                        raise DeepleakError("the leaked per-step labels do not match the restored labels")
                    order.append(pools[int(label)].pop())
            order_tensor = torch.as_tensor(order, dtype=torch.int64)
        else:
            order_tensor = torch.randperm(n, generator=generator)
        for chunk in step_batches(order_tensor, batch_size):
            schedule.append((chunk + offset, labels[chunk]))
    return schedule


def align(copies: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """For each copy (E, N, ...), the permutation (N,) that best matches it to ``reference``
    (N, ...) among images of the same label (Hungarian on squared distance)."""
    n = len(labels)
    same = (labels[:, None] == labels[None, :]).cpu().numpy()
    perms = []
    for copy_ in copies:
        cost = torch.cdist(reference.reshape(n, -1), copy_.reshape(n, -1)).pow(2).cpu().numpy()
        cost = np.where(same, cost, 1e12)
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        perms.append(torch.as_tensor(perm, device=copies.device))
    return perms


def psnr_db(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of ``x`` against ``y`` (same shape, both clamped to [0, 1]); inf when equal."""
    mse = float(((x.clamp(0, 1) - y.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def epoch_psnr(epoch_images: torch.Tensor, private_images: torch.Tensor, permutation: Sequence[int],
               psnr: PSNR) -> dict[str, list[float]]:
    """The replay's own score (a :class:`~deepleak.attacks.result.Reconstruction` scorer):
    each epoch's dummies (E, N, C, H, W), matched to the answer, paired with the private
    images (N, C, H, W) as the answer is and scored like it: mean PSNR in dB per epoch."""
    truth = private_images.numpy()
    return {"epoch_psnr": [float(np.mean(psnr(epoch[list(permutation)].numpy(), truth))) for epoch in epoch_images]}


class FedAvgReplay:
    """Minimise ``distance(pseudo-gradient of the replayed client, observed one) + priors``.

    Settings as in GradientMatching (``distance``, ``optimizer``, ``priors``, ``iterations``,
    ``restarts``, ``box``, ``budget_s``, ``log_every``, ``max_evaluations``: here a cap on the
    exact replay's evaluations, each a forward and a reverse replay, split evenly between
    restarts; the relaxed order's evaluations are not counted, as in ``evaluations``), plus
    ``mode`` (shared | per_epoch), ``epoch_prior`` (weight of the epoch-order-invariant prior,
    per_epoch mode), ``realign_every`` (evaluations between re-matchings of the copies) and
    ``checkpoint_every`` (steps between stored weights; 0: ceil(sqrt(T)) for small weights,
    else W_0 only with bisection in between) and ``image_gradient`` (the reverse steps by
    double backward, default, or by finite differences on smooth victims, calibrated and
    checked against the exact gradient at the start as in GradientMatching).
    ``assignment``: random (every epoch's batch order drawn from the seed, as in the
    literature) or learned (relaxed and optimised for ``assignment_iterations`` optimiser steps
    from ``assignment_starts`` starts, the lowest relaxed distance kept, before ``iterations``
    steps of the exact replay in the rounded order; shared mode; see the module docstring).

    The result's extras: ``epoch_agreement`` (PSNR in dB of each epoch's matched copy against
    the answer; inf in shared mode), ``replay_assignment`` (random | learned | leaked),
    ``replay_schedule`` (the best restart's variable indices of every step, T lists) and
    ``relaxed_distance`` (its relaxed phase's final weight distance, None without one); its
    scorer adds ``epoch_psnr``.
    """

    requires = ("weights",)  # what it needs beyond a gradient (checked for an imported update before any work)

    def __init__(
        self,
        distance: Distance,
        optimizer: Callable[..., torch.optim.Optimizer],
        priors: Mapping[str, Prior] | None = None,
        iterations: int = 100,
        restarts: int = 1,
        mode: str = "shared",
        epoch_prior: float = 1.0,
        realign_every: int = 20,
        checkpoint_every: int = 0,
        box: bool = False,
        budget_s: float | None = None,
        log_every: int = 0,
        image_gradient: DoubleBackward | FiniteDifference | None = None,
        assignment: str = "random",
        assignment_iterations: int = 50,
        assignment_starts: int = 1,
        max_evaluations: int | None = None,
        adaptive: bool = True,
    ) -> None:
        check_loop_settings(iterations, restarts, budget_s, max_evaluations)
        self.adaptive = bool(adaptive)
        if mode not in ("shared", "per_epoch"):
            raise DeepleakError(f"attack.mode must be shared or per_epoch, got {mode!r}")
        if assignment not in ("random", "learned"):
            raise DeepleakError(f"attack.assignment must be random or learned, got {assignment!r}")
        if assignment == "learned" and mode != "shared":
            raise DeepleakError("attack.assignment=learned needs attack.mode=shared (one variable per image)")
        if assignment_iterations < 0:
            raise DeepleakError(f"attack.assignment_iterations must be >= 0, got {assignment_iterations}")
        if assignment_starts < 1:
            raise DeepleakError(f"attack.assignment_starts must be >= 1, got {assignment_starts}")
        if checkpoint_every < 0:
            raise DeepleakError(f"attack.checkpoint_every must be >= 0 (0: automatic), got {checkpoint_every}")
        self.distance = distance
        self.optimizer = optimizer
        self.priors = dict(priors or {})
        self.iterations = int(iterations)
        self.restarts = int(restarts)
        self.mode = mode
        self.epoch_prior = float(epoch_prior)
        self.realign_every = max(1, int(realign_every))
        self.checkpoint_every = int(checkpoint_every)
        self.box = box
        self.budget_s = budget_s
        self.log_every = log_every
        self.image_gradient = image_gradient if image_gradient is not None else DoubleBackward()
        self.assignment = assignment
        self.assignment_iterations = int(assignment_iterations)
        self.assignment_starts = int(assignment_starts)
        self.max_evaluations = max_evaluations

    # ------------------------------------------------------------------ the objective
    def weight_distance(self, client: Client, start: list[torch.Tensor], variables: torch.Tensor,
                        target: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
        """(distance of the simulated pseudo-gradient to ``target``, its gradient w.r.t. the variables)."""
        end, checkpoints = client.run(start, variables)
        end = [w.requires_grad_(True) for w in end]
        scale = 1.0 / (client.lr * len(client.schedule))
        distance = self.distance([(s - e) * scale for s, e in zip(start, end)], target)
        adjoint = [g.detach() for g in torch.autograd.grad(distance, end)]
        return float(distance.detach()), client.backward(checkpoints, variables, adjoint)

    def _evaluate(self, client: Client, start: list[torch.Tensor], variables: torch.Tensor, target: list[torch.Tensor],
                  labels: torch.Tensor, epochs: int, perms: list[torch.Tensor] | None) -> tuple[float, float]:
        """Weight distance + priors at ``variables``, their gradient left in ``variables.grad``;
        returns (the weight distance, the whole objective)."""
        distance, grad = self.weight_distance(client, start, variables, target)
        prior, _ = self._prior(variables, labels, epochs, perms)
        prior_grad = torch.autograd.grad(prior, [variables], allow_unused=True)[0] if prior.requires_grad else None
        variables.grad = grad if prior_grad is None else grad + prior_grad
        return distance, distance + float(prior.detach())

    def _prior(self, variables: torch.Tensor, labels: torch.Tensor, epochs: int,
               perms: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(image priors + epoch prior, consensus images (N, ...)); keeps the graph to ``variables``."""
        n = len(labels)
        if self.mode == "shared":
            consensus = variables
            total = sum((prior(variables) for prior in self.priors.values()), variables.new_zeros(()))
            return total, consensus
        copies = variables.reshape(epochs, n, *variables.shape[1:])
        matched = torch.stack([c[p] for c, p in zip(copies, perms)])
        consensus = matched.mean(dim=0)
        total = sum((prior(variables) for prior in self.priors.values()), variables.new_zeros(()))
        if self.epoch_prior:
            total = total + self.epoch_prior * ((matched - consensus) ** 2).mean()
        return total, consensus

    # ------------------------------------------------------------------ the attack
    def reconstruct(self, observation: Observation, labels: torch.Tensor, seed: int = 0) -> Reconstruction:
        """Reconstruct the N images behind ``observation.weights`` given N restored ``labels``."""
        if observation.weights is None:
            raise DeepleakError(f"the replay attack needs shared weights (+scenario=fedavg), got {observation.scenario}")
        recipe = observation.recipe
        n, epochs = recipe.num_samples, recipe.epochs
        if len(labels) != n:
            raise DeepleakError(f"the replay attack needs {n} labels, got {len(labels)}")
        model = set_bn_mode(copy.deepcopy(observation.model), recipe.bn_mode)
        device = next(model.parameters()).device
        start = [p.detach() for p in model.parameters()]
        target = [g.to(device) for g in observation.gradient_view().gradient]
        labels = labels.to(device)
        generator = torch.Generator().manual_seed(seed)
        step_labels = observation.metadata.get("step_labels")
        shape = (n, *recipe.image_shape)
        begin = time.perf_counter()
        cap = restart_cap(self.max_evaluations, self.restarts)
        limits = Limits(planned_steps(self.iterations, cap, 1), deadline(self.budget_s, begin), cap)
        route = None if self.image_gradient.exact else self.image_gradient
        agreement = None
        if route is not None:
            model = route.prepare_model(model, freeze=False)  # its passes do not record a kink pattern
            agreement = self._calibrate(route, model, start, target, labels, recipe, step_labels, shape, seed)
        learns = self._learns_order(recipe, step_labels)

        def restart(index: int) -> Restart:
            schedule, variables = self._draw(labels, recipe, step_labels, shape, generator, device)
            variables.requires_grad_(True)
            relaxed, interrupted = None, False
            if learns:
                # Several relaxed starts (fresh images and logits each); the lowest relaxed
                # distance wins: measured, a start that found the order ends far lower.
                for attempt in range(self.assignment_starts):
                    if attempt:
                        variables = self._draw(labels, recipe, step_labels, shape, generator, device)[1]
                        variables.requires_grad_(True)
                    found, distance, descent = self._learn_schedule(model, start, variables, labels, recipe, target,
                                                                    generator, limits.deadline, index)
                    if relaxed is None or distance < relaxed:
                        schedule, relaxed, kept = found, distance, variables.detach().clone()
                    if descent.interrupted:
                        interrupted = True
                        break
                variables = kept.requires_grad_(True)
            client = Client(model, recipe.lr, schedule, self.checkpoint_every, route)
            if interrupted:  # the exact replay is skipped: the images reached so far are the answer
                result = self._finish(client, start, variables, labels, epochs, target, Descent(interrupted=True))
            else:
                result = self._run_restart(client, start, variables, labels, epochs, target, limits, index)
            result.answer.update(schedule=[indices.tolist() for indices, _ in schedule], relaxed=relaxed)
            return result

        restarts = run_restarts(self.restarts, restart, limits.deadline)
        best = restarts.best
        extras: dict[str, Any] = {}
        if route is not None:
            extras.update(image_gradient_agreement=agreement, image_gradient_step=route.current_step)
        extras.update(
            defence_attack=self.defence_record(observation.defence),
            epoch_agreement=best.answer["agreement"],
            replay_assignment="leaked" if step_labels is not None else ("learned" if learns else "random"),
            replay_schedule=best.answer["schedule"],
            relaxed_distance=best.answer["relaxed"],
        )
        return restarts.reconstruction(
            best.answer["images"], labels, begin,
            extras=extras,
            scorers=[functools.partial(epoch_psnr, best.answer["epoch_images"].clamp(0, 1).cpu())],
        )

    def check_defence(self, public: Mapping[str, Any]) -> None:
        """The replay runs under any defence; it does not model one (:meth:`defence_record`)."""

    def defence_record(self, public: Mapping[str, Any]) -> dict[str, Any]:
        """What metrics.json says of the attack's view of the defence: the replay matches the
        defended update as if it were the plain one, whether or not ``adaptive`` asked for more."""
        defended = public.get("name", "none") != "none"
        return {"adaptive": self.adaptive, "modelled": False, "adaptations": [],
                **({"not_modelled": "attack=fedavg_replay replays the undefended recipe"} if defended else {})}

    def _draw(self, labels, recipe, step_labels, shape, generator, device) -> tuple[Schedule, torch.Tensor]:
        """(schedule, dummy variables) of one restart, from ``generator``: the batch order of
        every step, then uniform images (one copy per epoch in per_epoch mode)."""
        copies = self.mode == "per_epoch"
        schedule = [(i.to(device), y) for i, y in
                    make_schedule(labels, recipe.epochs, recipe.batch_size, generator, copies, step_labels)]
        init = torch.rand(shape, generator=generator).to(device)
        return schedule, (init.repeat(recipe.epochs, 1, 1, 1) if copies else init)

    def _learns_order(self, recipe, step_labels) -> bool:
        """Whether a restart learns its batch order: assignment='learned', no leaked per-step
        labels, and more than one step per epoch (else there is no order to learn)."""
        return (self.assignment == "learned" and step_labels is None and self.assignment_iterations > 0
                and recipe.num_samples > recipe.batch_size)

    def _learn_schedule(self, model, start, variables, labels, recipe, target, generator, stop_at: float,
                        restart: int) -> tuple[Schedule, float, Descent]:
        """``assignment='learned'``: optimise ``variables`` (in place) and every epoch's relaxed
        assignment jointly until ``stop_at`` (time.perf_counter()), then round it. Returns (the
        hard schedule, the relaxed phase's final weight distance (inf if it diverged), its descent)."""
        n, epochs, device = len(labels), recipe.epochs, variables.device
        sizes = batch_sizes(n, recipe.batch_size)
        logits = start_logits(epochs, sizes, n, generator).to(device).requires_grad_(True)
        everyone = torch.arange(n, device=device)
        soft_schedule = [(everyone, labels)] * (epochs * len(sizes))
        optimizer = self.optimizer([variables, logits])

        def evaluate() -> tuple[torch.Tensor, list[float]]:
            with torch.enable_grad():
                weights = step_shares(logits, sizes)
            client = Client(model, recipe.lr, soft_schedule, self.checkpoint_every, None, weights.detach())
            distance, objective = self._evaluate(client, start, variables, target, labels, epochs, None)
            logits.grad = torch.autograd.grad(weights, logits, client.sample_weight_grad)[0]
            return torch.as_tensor(objective), [distance]

        descent = descend(optimizer, evaluate, [variables, logits], Limits(self.assignment_iterations, stop_at),
                          box=self.box, what=f"replay restart {restart} order", measure="weight distance",
                          log_every=self.log_every)
        # A start that diverged is never preferred over one that stayed finite.
        distance = descent.history[-1] if descent.history and not descent.nonfinite else math.inf
        distance = distance if math.isfinite(distance) else math.inf
        variables.grad = None
        with torch.no_grad():
            schedule = []
            for epoch_logits in logits:
                for batch in round_assignment(relaxed_assignment(epoch_logits, sizes), sizes):
                    schedule.append((batch.to(device), labels[batch.to(device)]))
        log.info("replay restart %d: learned the batch order in %d steps (relaxed weight distance %.4g): %s",
                 restart, self.assignment_iterations, distance, [b.tolist() for b, _ in schedule])
        return schedule, distance, descent

    def _calibrate(self, route: FiniteDifference, model, start, target, labels, recipe, step_labels, shape, seed) -> float:
        """Calibrate ``route``'s step against the exact reverse pass on a draw of its own (the
        restarts' random stream is unchanged); the agreement, or a DeepleakError."""
        generator = torch.Generator().manual_seed(seed + CHECK_SEED_OFFSET)
        schedule, variables = self._draw(labels, recipe, step_labels, shape, generator, start[0].device)
        exact = self.weight_distance(Client(model, recipe.lr, schedule, self.checkpoint_every), start, variables, target)[1]
        client = Client(model, recipe.lr, schedule, self.checkpoint_every, route)
        value, step = route.calibrate(
            lambda steps: route.agreements([exact], lambda: [self.weight_distance(client, start, variables, target)[1]], steps),
            f"the replay of {type(model).__name__}")
        log.info("finite-difference replay: step %.2g, cosine %.6f to the exact gradient", step, value)
        return value

    def _run_restart(self, client: Client, start, variables, labels, epochs: int, target, limits: Limits,
                     restart: int) -> Restart:
        """The exact replay from ``variables`` (in place) in ``client``'s schedule, then its answer."""
        optimizer = self.optimizer([variables])
        n = len(labels)
        state: dict[str, Any] = {"evaluations": 0, "perms": None}

        def perms() -> list[torch.Tensor] | None:
            if self.mode == "shared":
                return None
            if state["perms"] is None or state["evaluations"] % self.realign_every == 0:
                with torch.no_grad():
                    copies = variables.detach().reshape(epochs, n, *variables.shape[1:])
                    reference = copies[0] if state["perms"] is None else torch.stack(
                        [c[p] for c, p in zip(copies, state["perms"])]).mean(0)
                    state["perms"] = align(copies, reference, labels)
            return state["perms"]

        def evaluate() -> tuple[torch.Tensor, list[float]]:
            distance, objective = self._evaluate(client, start, variables, target, labels, epochs, perms())
            state["evaluations"] += 1
            return torch.as_tensor(objective), [distance]

        descent = descend(optimizer, evaluate, [variables], limits, box=self.box, what=f"replay restart {restart}",
                          measure="weight distance", log_every=self.log_every)
        return self._finish(client, start, variables, labels, epochs, target, descent)

    def _finish(self, client: Client, start, variables, labels, epochs: int, target, descent: Descent) -> Restart:
        """Score the kept iterate (one more evaluation) and form the answer: {images (N, ...),
        epoch_images (E, N, ...) matched to them, agreement (PSNR in dB of each epoch's copy)}."""
        n = len(labels)
        final = variables.detach()
        distance, _ = self.weight_distance(client, start, final, target)
        with torch.no_grad():
            if self.mode == "per_epoch":
                copies = final.reshape(epochs, n, *final.shape[1:])
                matched = torch.stack([c[p] for c, p in zip(copies, align(copies, copies[0], labels))])  # re-matched
                images = matched.mean(0)
                agreement = [psnr_db(m, images) for m in matched]
            else:
                images = final.clone()
                matched = images.unsqueeze(0).repeat(epochs, 1, 1, 1, 1)
                agreement = [math.inf] * epochs
        answer = {"images": images, "epoch_images": matched, "agreement": agreement}
        return Restart(distance if math.isfinite(distance) else math.inf, descent, answer, scoring_evaluations=1)
