"""The optimisation loop every recipe shares: restarts, limits, interrupts, divergence.

Per restart a recipe supplies its variables (the images first), an optimiser over them and
``evaluate()``: one evaluation of its objective at the current variables, which leaves each
variable's gradient in ``.grad`` and returns (objective, [distance of each member]).
:func:`descend` steps the optimiser under :class:`Limits` (steps, a wall-clock deadline, an
evaluation cap) and keeps the iterate sound: a step cut short by the deadline, the cap or
Ctrl-C (inside an L-BFGS step) ends at the lowest objective it evaluated, which is never above
the last complete iterate's (an L-BFGS step evaluates that first; a one-evaluation step such
as Adam's is thus undone), and a step that turns anything non-finite is undone and ends the
descent. :func:`run_restarts` runs the restarts and keeps the one with the smallest final
distance.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from deepleak.attacks.result import Reconstruction
from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

# () -> (objective (0-dim tensor), [distance of each member]); gradients left in each variable's .grad.
Evaluate = Callable[[], tuple[torch.Tensor, list[float]]]


def check_loop_settings(iterations: int, restarts: int, budget_s: float | None,
                        max_evaluations: int | None = None, group_size: int | None = None) -> None:
    """The optimisation-loop settings every attack shares, checked before any work.
    ``group_size``: candidates per restart (group consistency), each evaluated every step."""
    if iterations < 1:
        raise DeepleakError(f"attack.iterations must be >= 1, got {iterations}")
    if restarts < 1:
        raise DeepleakError(f"attack.restarts must be >= 1, got {restarts}")
    if budget_s is not None and budget_s <= 0:
        raise DeepleakError(f"attack.budget_s must be > 0 seconds (or null), got {budget_s}")
    least = restarts * (group_size or 1)
    if max_evaluations is not None and max_evaluations < least:
        what = "restarts" if group_size is None else "restarts x group size"
        raise DeepleakError(f"attack.max_evaluations must be >= {what} ({least}), got {max_evaluations}")


def deadline(budget_s: float | None, start: float) -> float:
    """The time.perf_counter() at which ``budget_s`` seconds from ``start`` are spent (inf: none)."""
    return start + budget_s if budget_s else math.inf


def restart_cap(max_evaluations: int | None, restarts: int) -> int | None:
    """Each restart's share of ``max_evaluations`` (split evenly; None: no cap)."""
    return max_evaluations // restarts if max_evaluations is not None else None


def planned_steps(iterations: int, cap: int | None, cost: int) -> int:
    """The steps a restart plans (its schedule too): ``iterations``, or under ``cap`` at most
    the steps it can pay for, each step costing at least ``cost`` evaluations."""
    return iterations if cap is None else max(1, min(iterations, cap // cost))


@dataclass(frozen=True)
class Limits:
    """What one descent may spend: ``steps`` optimiser steps, until ``deadline``
    (time.perf_counter() seconds), at most ``evaluations`` evaluations (None: no cap)."""

    steps: int
    deadline: float = math.inf
    evaluations: int | None = None


@dataclass
class Descent:
    """How one descent went: ``steps`` completed, ``evaluations`` spent (``cost`` each),
    ``history`` the smallest member distance after each step, and why it ended early."""

    steps: int = 0
    evaluations: int = 0
    history: list[float] = field(default_factory=list)
    stopped_by_budget: bool = False
    stopped_by_evaluations: bool = False
    interrupted: bool = False
    nonfinite: bool = False


class _Stop(Exception):
    """Raised inside the closure when the wall-clock budget or the evaluation cap is spent."""


def descend(optimizer: torch.optim.Optimizer, evaluate: Evaluate, variables: Sequence[torch.Tensor], limits: Limits,
            *, cost: int = 1, signed: bool = False, box: bool = False, scheduler: Any = None,
            before_step: Callable[[int], None] | None = None, what: str = "restart 0",
            measure: str = "gradient distance", log_every: int = 0) -> Descent:
    """Step ``optimizer`` over ``variables`` (the images first) with ``evaluate`` as its closure.

    - ``cost``: evaluations one call of ``evaluate`` counts (G with group consistency).
    - ``signed``: replace every gradient by its sign (Inverting Gradients).
    - ``box``: clamp the images (``variables[0]``) to [0, 1] after every step.
    - ``scheduler``: stepped after every step; ``before_step(step)`` runs before each.
    - ``what`` names the descent in the progress bar and the log, ``measure`` its distance.

    The variables end at the last complete, finite iterate, or at the lowest objective a step
    cut short evaluated (changed in place)."""
    descent = Descent()
    # step_best: (objective, variables) of the lowest finite objective evaluated in this step;
    # variables None: the step's first evaluation, which is at the last complete iterate.
    state: dict[str, Any] = {"distances": [math.inf], "cause": None, "step_best": None}

    def closure() -> torch.Tensor:
        if time.perf_counter() >= limits.deadline:
            state["cause"] = "budget"
            raise _Stop
        if limits.evaluations is not None and descent.evaluations + cost > limits.evaluations:
            state["cause"] = "evaluations"
            raise _Stop
        total, distances = evaluate()
        value = float(total)
        best = state["step_best"]
        if best is None:
            state["step_best"] = (value if math.isfinite(value) else math.inf, None)
        elif math.isfinite(value) and value < best[0]:
            state["step_best"] = (value, [v.detach().clone() for v in variables])
        if signed:
            for variable in variables:
                variable.grad = variable.grad.sign()
        descent.evaluations += cost
        state["distances"] = distances
        return total

    progress = tqdm(range(limits.steps), desc=what, leave=False, disable=None)
    last_finite = [v.detach().clone() for v in variables]

    def restore(saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for variable, value in zip(variables, saved):
                variable.copy_(value)

    def keep_step_best() -> None:
        """A step cut short: its lowest evaluated objective (an L-BFGS line search may have
        moved the variables past it), or the last complete iterate if it evaluated nothing."""
        best = state["step_best"]
        moved = best is not None and best[1] is not None
        restore(best[1] if moved else last_finite)
        if box and moved:
            with torch.no_grad():
                variables[0].clamp_(0, 1)

    for step in progress:
        # The whole step is guarded, not only the optimiser's: Ctrl-C lands wherever the process
        # is (the checks, the scheduler, the log line after a step), and the best result so far
        # is kept wherever it lands (step_best is cleared once a step is complete).
        try:
            if before_step is not None:
                before_step(step)
            state["step_best"] = None
            try:
                loss = optimizer.step(closure)
            except _Stop:
                keep_step_best()
                descent.stopped_by_budget = state["cause"] == "budget"
                descent.stopped_by_evaluations = state["cause"] == "evaluations"
                break
            finite = math.isfinite(float(loss)) and all(math.isfinite(d) for d in state["distances"])
            # A sum is non-finite when any entry is (one reduction instead of a mask per step).
            if not (finite and all(math.isfinite(float(v.detach().sum())) for v in variables)):
                # Diverged: fall back to the last finite iterate and stop this descent.
                descent.nonfinite = True
                log.warning("%s diverged at step %d; keeping its last finite iterate", what, step)
                restore(last_finite)
                break
            if box:
                with torch.no_grad():
                    variables[0].clamp_(0, 1)
            if scheduler is not None:
                scheduler.step()
            last_finite = [v.detach().clone() for v in variables]
            state["step_best"] = None  # complete: an interrupt from here keeps this iterate
            descent.steps = step + 1
            distance = min(state["distances"])
            descent.history.append(distance)
            progress.set_postfix(distance=f"{distance:.3g}")
            if log_every and descent.steps % log_every == 0:
                log.info("%s step %d: %s %.4g", what, descent.steps, measure, distance)
        except KeyboardInterrupt:
            # The task records the result and then stops.
            descent.interrupted = True
            keep_step_best()
            log.warning("interrupted at step %d of %s; keeping the best result so far", step, what)
            break
    progress.close()
    return descent


@dataclass
class Restart:
    """One restart's outcome: its final ``distance`` (inf when it diverged), its ``descent``,
    the evaluations spent scoring its answer, and the ``answer`` itself (the recipe's)."""

    distance: float
    descent: Descent
    answer: Any
    scoring_evaluations: int = 0


@dataclass
class Restarts:
    """The restarts together: the ``best`` (first of the smallest distance) and totals."""

    best: Restart
    best_index: int
    distances: list[float]
    iterations: int
    evaluations: int
    nonfinite: int
    stopped_by_budget: bool
    stopped_by_evaluations: bool
    interrupted: bool
    iteration_seconds: float = 0.0  # inside run(restart): the descents and their final scoring

    def reconstruction(self, images: torch.Tensor, labels: torch.Tensor, started: float, **fields: Any) -> Reconstruction:
        """The recipe's answer: ``images`` (K, C, H, W, clamped to [0, 1] here) and ``labels``
        of the best restart, the loop's own fields filled in from these restarts (seconds since
        ``started``, a time.perf_counter()), and the recipe's ``fields`` (extras, priors, ...)."""
        return Reconstruction(
            images=images.clamp(0, 1).cpu(),
            labels=labels.cpu(),
            gradient_distance=self.best.distance,
            restart_distances=self.distances,
            best_restart=self.best_index,
            iterations=self.iterations,
            evaluations=self.evaluations,
            seconds=time.perf_counter() - started,
            iteration_seconds=self.iteration_seconds,
            nonfinite_restarts=self.nonfinite,
            stopped_by_budget=self.stopped_by_budget,
            interrupted=self.interrupted,
            history=self.best.descent.history,
            stopped_by_evaluations=self.stopped_by_evaluations,
            **fields,
        )


def run_restarts(count: int, run: Callable[[int], Restart], deadline: float) -> Restarts:
    """``run(restart)`` for restart 0 .. ``count - 1`` until the deadline or an interrupt;
    the first restart always runs (a deadline already passed stops it at its first evaluation)."""
    best: Restart | None = None
    best_index = 0
    distances: list[float] = []
    iterations = evaluations = nonfinite = 0
    stopped = capped = interrupted = False
    iteration_seconds = 0.0
    for restart in range(count):
        if interrupted:
            break
        if restart and time.perf_counter() >= deadline:
            stopped = True
            break
        began = time.perf_counter()
        result = run(restart)
        iteration_seconds += time.perf_counter() - began
        descent = result.descent
        interrupted = descent.interrupted
        evaluations += descent.evaluations + result.scoring_evaluations
        iterations += descent.steps
        stopped = stopped or descent.stopped_by_budget
        capped = capped or descent.stopped_by_evaluations
        nonfinite += int(descent.nonfinite)
        distances.append(result.distance)
        if best is None or result.distance < best.distance:
            best, best_index = result, restart
    assert best is not None
    if not math.isfinite(best.distance):
        log.warning("every restart diverged; the reconstruction is the last finite iterate")
    return Restarts(best, best_index, distances, iterations, evaluations, nonfinite, stopped, capped, interrupted,
                    iteration_seconds)
