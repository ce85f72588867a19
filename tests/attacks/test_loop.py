"""The shared optimisation loop (deepleak.attacks.loop): divergence, limits and interrupts,
alone on crafted objectives and through both recipes that use it."""

import functools
import math
import time

import pytest
import torch
from crafted import observe, tiny_fedavg

from deepleak.attacks import GradientMatching
from deepleak.attacks.fedavg_replay import FedAvgReplay
from deepleak.attacks.loop import Descent, Limits, Restart, check_loop_settings, descend, run_restarts
from deepleak.attacks.parts.distance import L2
from deepleak.errors import DeepleakError

ADAM = functools.partial(torch.optim.Adam, lr=0.05)
LBFGS = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=20, line_search_fn="strong_wolfe")


def quadratic(x: torch.Tensor, nan_at: int | None = None):
    """evaluate() for sum(x^2): gradient 2x in x.grad; the ``nan_at``-th call returns NaN."""
    calls = {"n": 0}

    def evaluate():
        calls["n"] += 1
        if calls["n"] == nan_at:
            x.grad = torch.full_like(x, math.nan)
            return torch.tensor(math.nan), [math.nan]
        x.grad = 2 * x.detach()
        value = float((x.detach() ** 2).sum())
        return torch.tensor(value), [value]
    return evaluate, calls


def test_nonfinite_step_is_rolled_back_to_the_last_finite_iterate():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    evaluate, calls = quadratic(x, nan_at=3)
    descent = descend(torch.optim.SGD([x], lr=0.1), evaluate, [x], Limits(steps=10))
    # Steps 0 and 1 multiply x by 0.8 each; step 2 turns it NaN and is undone.
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, -2.0]) * 0.8**2)
    assert descent.nonfinite and descent.steps == 2 and calls["n"] == 3
    assert descent.history == pytest.approx([5.0, 5.0 * 0.64])  # the distance each step evaluated at
    assert not (descent.stopped_by_budget or descent.stopped_by_evaluations or descent.interrupted)


def test_limits_stop_before_an_evaluation_and_leave_the_iterate():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    evaluate, calls = quadratic(x)
    late = descend(torch.optim.SGD([x], lr=0.1), evaluate, [x], Limits(steps=10, deadline=time.perf_counter()))
    assert late.stopped_by_budget and late.steps == 0 and calls["n"] == 0
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, -2.0]))
    capped = descend(torch.optim.SGD([x], lr=0.1), evaluate, [x], Limits(steps=10, evaluations=7), cost=2)
    assert capped.stopped_by_evaluations and capped.steps == 3 and capped.evaluations == 6 and calls["n"] == 3


def test_an_lbfgs_step_cut_short_keeps_its_lowest_evaluated_point():
    x = torch.tensor([3.0, -1.0, 0.5], requires_grad=True)
    seen: list[tuple[float, torch.Tensor]] = []

    def evaluate():  # sum((x - 1)^4): L-BFGS needs several line-search evaluations per step
        x.grad = 4 * (x.detach() - 1) ** 3
        value = float(((x.detach() - 1) ** 4).sum())
        seen.append((value, x.detach().clone()))
        return torch.tensor(value), [value]

    descent = descend(LBFGS([x]), evaluate, [x], Limits(steps=10, evaluations=4))
    assert descent.stopped_by_evaluations and descent.steps == 0 and len(seen) == 4
    value, point = min(seen, key=lambda pair: pair[0])
    assert value < seen[0][0] / 2  # the first step's evaluations went well below the start ...
    torch.testing.assert_close(x.detach(), point, rtol=0, atol=0)  # ... and the lowest of them is kept


def test_box_sign_and_interrupt_in_the_loop():
    x = torch.tensor([0.9, 0.2], requires_grad=True)
    calls = {"n": 0}

    def evaluate():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        x.grad = torch.tensor([-5.0, 0.001])  # signed: a step of lr along (+1, -1)
        return torch.tensor(1.0), [1.0]

    descent = descend(torch.optim.SGD([x], lr=0.3), evaluate, [x], Limits(steps=10), signed=True, box=True)
    assert descent.interrupted and descent.steps == 2
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, 0.0]))  # clamped after each step


@pytest.mark.parametrize("where", ["scheduler", "before_step"])
def test_an_interrupt_after_the_optimiser_s_step_keeps_the_last_complete_iterate(where):
    """Ctrl-C lands wherever the process is, not only inside optimizer.step: in the scheduler
    after the third step (the step is cut short: its first evaluation was at the second
    iterate, which is kept) or before the fourth step (the third iterate is complete and kept).
    SGD on sum(x^2) multiplies x by 0.8 a step."""
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    evaluate, calls = quadratic(x)
    hits = {"n": 0}

    def interrupt(*_):
        hits["n"] += 1
        if hits["n"] == 3 + (where == "before_step"):
            raise KeyboardInterrupt

    scheduler = type("Scheduler", (), {"step": interrupt})() if where == "scheduler" else None
    descent = descend(torch.optim.SGD([x], lr=0.1), evaluate, [x], Limits(steps=10), scheduler=scheduler,
                      before_step=interrupt if where == "before_step" else None)
    kept = 2 if where == "scheduler" else 3
    assert descent.interrupted and descent.steps == kept and calls["n"] == 3
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, -2.0]) * 0.8**kept)


def test_restarts_stop_at_an_interrupt_and_keep_the_best():
    order = iter([3.0, 1.0, 2.0])

    def run(index):
        return Restart(next(order), Descent(steps=1, evaluations=2, interrupted=index == 1), {"index": index}, 1)

    restarts = run_restarts(3, run, deadline=math.inf)
    assert restarts.distances == [3.0, 1.0] and restarts.best_index == 1 and restarts.best.answer == {"index": 1}
    assert restarts.interrupted and restarts.evaluations == 6 and restarts.iterations == 2
    # A deadline already passed still runs the first restart (which stops at its first evaluation).
    late = run_restarts(3, lambda i: Restart(0.5, Descent(stopped_by_budget=True), None), deadline=0.0)
    assert late.distances == [0.5] and late.stopped_by_budget


def test_loop_settings_are_checked():
    with pytest.raises(DeepleakError, match=r"must be >= restarts \(2\), got 1"):
        check_loop_settings(10, 2, None, max_evaluations=1)
    with pytest.raises(DeepleakError, match=r"must be >= restarts x group size \(6\), got 5"):
        check_loop_settings(10, 2, None, max_evaluations=5, group_size=3)
    with pytest.raises(DeepleakError, match="attack.max_evaluations must be >= restarts"):
        FedAvgReplay(L2(), ADAM, restarts=3, max_evaluations=2)


# --------------------------------------------------------------------------- through the recipes

def test_replay_stops_at_max_evaluations():
    batch, observation = tiny_fedavg()
    lbfgs = FedAvgReplay(L2(), LBFGS, iterations=100, max_evaluations=7).reconstruct(observation, batch.labels)
    assert lbfgs.stopped_by_evaluations and not lbfgs.stopped_by_budget
    assert lbfgs.evaluations - 1 <= 7  # + scoring the kept iterate, not counted against the cap
    assert lbfgs.iterations < 7 and math.isfinite(lbfgs.gradient_distance)
    adam = FedAvgReplay(L2(), ADAM, iterations=100, restarts=2, max_evaluations=6).reconstruct(observation, batch.labels)
    # Adam costs one evaluation a step: the cap plans 3 steps per restart (and ends them, as in GradientMatching).
    assert adam.iterations == 6 and adam.evaluations == 6 + 2
    assert len(adam.restart_distances) == 2
    free = FedAvgReplay(L2(), ADAM, iterations=3).reconstruct(observation, batch.labels)
    assert not free.stopped_by_evaluations and free.evaluations == 3 + 1


def interrupt_at(monkeypatch, cls, call):
    """Make ``cls._evaluate`` raise KeyboardInterrupt on its ``call``-th call."""
    original, calls = cls._evaluate, {"n": 0}

    def evaluate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_evaluate", evaluate)
    return calls


def test_replay_interrupted_inside_an_evaluation_keeps_the_best_so_far(monkeypatch):
    batch, observation = tiny_fedavg()
    two_steps = FedAvgReplay(L2(), ADAM, iterations=2).reconstruct(observation, batch.labels, seed=1)
    calls = interrupt_at(monkeypatch, FedAvgReplay, 3)
    result = FedAvgReplay(L2(), ADAM, iterations=5, restarts=2).reconstruct(observation, batch.labels, seed=1)
    assert result.interrupted and calls["n"] == 3
    assert result.iterations == 2 and len(result.restart_distances) == 1  # the second restart never starts
    # The kept iterate is the one after step 2 (the interrupted step 3 is undone).
    torch.testing.assert_close(result.images, two_steps.images, rtol=0, atol=0)
    assert result.gradient_distance == two_steps.gradient_distance
    assert result.evaluations == 2 + 1 and math.isfinite(result.gradient_distance)


def test_replay_interrupted_while_learning_the_order_skips_the_exact_replay(monkeypatch):
    batch, observation = tiny_fedavg()
    calls = interrupt_at(monkeypatch, FedAvgReplay, 2)
    result = FedAvgReplay(L2(), ADAM, iterations=5, assignment="learned", assignment_iterations=4,
                          assignment_starts=3).reconstruct(observation, batch.labels)
    assert result.interrupted and calls["n"] == 2 and result.iterations == 0
    assert result.extras["replay_assignment"] == "learned" and len(result.extras["replay_schedule"]) == 4
    assert torch.isfinite(result.images).all() and math.isfinite(result.gradient_distance)


def test_gradient_matching_interrupted_inside_an_evaluation(monkeypatch):
    observation, _, labels = observe(1)
    two_steps = GradientMatching(L2(), ADAM, iterations=2).reconstruct(observation, labels)
    interrupt_at(monkeypatch, GradientMatching, 3)
    result = GradientMatching(L2(), ADAM, iterations=9, restarts=3).reconstruct(observation, labels)
    assert result.interrupted and result.iterations == 2 and len(result.restart_distances) == 1
    torch.testing.assert_close(result.images, two_steps.images, rtol=0, atol=0)
