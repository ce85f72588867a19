"""assignment='learned': the replay learns each epoch's batch order (a Sinkhorn-relaxed
assignment of samples to steps, optimised with the images, then rounded)."""

import math

import pytest
import torch

from deepleak.attacks.parts.distance import L2
from deepleak.attacks.parts.prior import TotalVariation
from deepleak.attacks.engine.replay_client import Client
from deepleak.attacks.fedavg_replay import FedAvgReplay, make_schedule
from deepleak.attacks.assignment import batch_sizes, relaxed_assignment, round_assignment
from deepleak.attacks.loop import Descent
from deepleak.errors import DeepleakError

from crafted import TINY_LENET, tiny_fedavg
from deepleak.models import build_model
from deepleak.scenarios import FedAvg, PrivateBatch

LENET = TINY_LENET


@pytest.mark.parametrize("n, b", [(8, 4), (5, 2), (6, 6)])
def test_relaxed_assignment_has_the_batch_marginals(n, b):
    sizes = batch_sizes(n, b)
    logits = torch.randn(len(sizes), n, generator=torch.Generator().manual_seed(n)) * 3
    assignment = relaxed_assignment(logits, sizes, iterations=200)
    assert (assignment >= 0).all()
    torch.testing.assert_close(assignment.sum(0), torch.ones(n), atol=1e-5, rtol=0)
    torch.testing.assert_close(assignment.sum(1), torch.tensor(sizes, dtype=torch.float32), atol=1e-4, rtol=0)


def test_rounding_recovers_a_hard_assignment_and_respects_batch_sizes():
    batches = [torch.tensor([1, 3]), torch.tensor([0, 4]), torch.tensor([2])]
    sizes = [2, 2, 1]
    logits = torch.full((3, 5), -4.0)
    for step, batch in enumerate(batches):
        logits[step, batch] = 4.0
    noisy = relaxed_assignment(logits + torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), sizes)
    rounded = round_assignment(noisy, sizes)
    assert [b.tolist() for b in rounded] == [b.tolist() for b in batches]
    # A uniform matrix still rounds to a valid partition with the right sizes.
    uniform = round_assignment(torch.full((3, 5), 1 / 3), sizes)
    assert [len(b) for b in uniform] == sizes and sorted(torch.cat(uniform).tolist()) == list(range(5))


def test_one_hot_sample_weights_are_the_hard_client_and_their_gradient_is_exact():
    batch, obs = tiny_fedavg(n=5, b=2, epochs=2, lr=0.2)
    schedule = make_schedule(batch.labels, 2, 2, torch.Generator().manual_seed(1), copies=False)
    everyone = torch.arange(5)
    weights = torch.zeros(len(schedule), 5)
    for t, (indices, _) in enumerate(schedule):
        weights[t, indices] = 1.0 / len(indices)
    start = [p.detach() for p in obs.model.parameters()]
    hard = Client(obs.model, 0.2, schedule).run(start, batch.images)[0]
    soft_client = Client(obs.model, 0.2, [(everyone, batch.labels)] * len(schedule), checkpoint_every=2,
                         sample_weights=weights)
    soft = soft_client.run(start, batch.images)[0]
    for h, s in zip(hard, soft):
        torch.testing.assert_close(s, h, rtol=1e-5, atol=1e-6)

    # d(distance)/d(images) and d(distance)/d(sample weights) of the checkpointed reverse pass
    # equal those of the unrolled graph, at a soft (non-one-hot) point.
    target = list(obs.gradient_view().gradient)
    mixed = (0.7 * weights + 0.3 / 5 * (weights > -1)).clone()  # every sample in every step a little
    dummies = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    client = Client(obs.model, 0.2, [(everyone, batch.labels)] * len(schedule), checkpoint_every=2,
                    sample_weights=mixed)
    replay = FedAvgReplay(L2(), torch.optim.LBFGS)
    for _ in range(2):  # the accumulated weight gradient is reset by every evaluation
        distance, gradient = replay.weight_distance(client, start, dummies, target)
    leaf = dummies.clone().requires_grad_(True)
    leaf_weights = mixed.clone().requires_grad_(True)
    unrolled = Client(obs.model, 0.2, client.schedule, sample_weights=leaf_weights)
    params = [w.clone().requires_grad_(True) for w in start]
    end = unrolled.unrolled(params, leaf)
    reference = L2()([(s - e) / (0.2 * len(schedule)) for s, e in zip(params, end)], target)
    expected_images, expected_weights = torch.autograd.grad(reference, [leaf, leaf_weights])
    assert distance == pytest.approx(float(reference.detach()), rel=1e-5)
    torch.testing.assert_close(gradient, expected_images, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(client.sample_weight_grad, expected_weights, rtol=1e-4, atol=1e-9)
    assert float(expected_weights.abs().max()) > 0


def test_learned_order_finds_the_clients_order_from_the_true_images():
    """From the true images (a fixed point for the images) and a near-uniform start, the
    relaxed order moves to the client's own batches, every step right, at a weight distance of
    ~0; every other order of the same images is far."""
    model = build_model(LENET, 10, (3, 12, 12), seed=3)
    batch = PrivateBatch(torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(3)), torch.arange(4))
    obs = FedAvg(local_batch_size=2, epochs=1, lr=0.5, seed=3, leak_metadata=True).observe(model, batch, 10)
    truth = obs.metadata.pop("step_labels")  # unique labels: label = index; the attack never sees it
    start = [p.detach() for p in obs.model.parameters()]
    target = list(obs.gradient_view().gradient)
    replay = FedAvgReplay(L2(), lambda params: torch.optim.LBFGS(params, lr=1, max_iter=20, line_search_fn="strong_wolfe"),
                    assignment="learned", assignment_iterations=15)
    variables = batch.images.clone().requires_grad_(True)
    schedule, relaxed, descent = replay._learn_schedule(obs.model, start, variables, batch.labels, obs.recipe, target,
                                                        torch.Generator().manual_seed(0), math.inf, 0)
    assert descent.steps == 15 and not (descent.interrupted or descent.nonfinite)
    assert [indices.tolist() for indices, _ in schedule] == truth
    assert relaxed < 1e-6
    others = []
    for first in ([0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]):
        rest = sorted(set(range(4)) - set(first))
        if [first, rest] != truth:
            steps = [(torch.tensor(b), batch.labels[torch.tensor(b)]) for b in (first, rest)]
            others.append(replay.weight_distance(Client(obs.model, 0.5, steps), start, batch.images, target)[0])
    assert len(others) == 5 and min(others) > 1e3 * max(relaxed, 1e-9)


def test_learned_order_is_recorded_and_checked():
    batch, obs = tiny_fedavg(n=4, b=2, epochs=2, lr=0.05)
    result = FedAvgReplay(L2(), torch.optim.Adam, {"tv": TotalVariation(1e-6)}, iterations=2, assignment="learned",
                    assignment_iterations=2).reconstruct(obs, batch.labels)
    assert result.extras["replay_assignment"] == "learned" and result.extras["relaxed_distance"] is not None
    schedule = result.extras["replay_schedule"]
    assert len(schedule) == 4
    for epoch in (schedule[:2], schedule[2:]):
        assert sorted(i for step in epoch for i in step) == [0, 1, 2, 3]
    random = FedAvgReplay(L2(), torch.optim.Adam, iterations=1).reconstruct(obs, batch.labels)
    assert random.extras["replay_assignment"] == "random" and random.extras["relaxed_distance"] is None
    with pytest.raises(DeepleakError, match="assignment must be random or learned"):
        FedAvgReplay(L2(), torch.optim.Adam, assignment="sinkhorn")
    with pytest.raises(DeepleakError, match="needs attack.mode=shared"):
        FedAvgReplay(L2(), torch.optim.Adam, mode="per_epoch", assignment="learned")
    with pytest.raises(DeepleakError, match="assignment_iterations must be >= 0"):
        FedAvgReplay(L2(), torch.optim.Adam, assignment_iterations=-1)


def test_the_lowest_relaxed_start_is_kept(monkeypatch):
    """With several relaxed starts, the schedule and the images of the start with the lowest
    relaxed distance go on to the exact replay."""
    batch, obs = tiny_fedavg(n=4, b=2, epochs=1, lr=0.05)
    found = iter([([0, 1], 0.5), ([0, 2], 0.1), ([0, 3], 0.3)])
    seen = []

    def fake(self, model, start, variables, labels, recipe, target, generator, stop_at, restart):
        first, distance = next(found)
        seen.append(variables.detach().clone())
        rest = sorted(set(range(4)) - set(first))
        return [(torch.tensor(b), labels[torch.tensor(b)]) for b in (first, rest)], distance, Descent(steps=1)

    monkeypatch.setattr(FedAvgReplay, "_learn_schedule", fake)
    began = []
    original = FedAvgReplay._run_restart

    def spy(self, client, start, variables, *args):
        began.append(variables.detach().clone())
        return original(self, client, start, variables, *args)

    monkeypatch.setattr(FedAvgReplay, "_run_restart", spy)
    result = FedAvgReplay(L2(), torch.optim.Adam, iterations=1, assignment="learned", assignment_starts=3).reconstruct(
        obs, batch.labels)
    assert result.extras["replay_schedule"] == [[0, 2], [1, 3]] and result.extras["relaxed_distance"] == 0.1
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1])  # every start draws its own images
    torch.testing.assert_close(began[0], seen[1])
    with pytest.raises(DeepleakError, match="assignment_starts must be >= 1"):
        FedAvgReplay(L2(), torch.optim.Adam, assignment_starts=0)
    # One step per epoch: no order to learn.
    _, whole = tiny_fedavg(n=4, b=4, epochs=2, lr=0.05)
    assert FedAvgReplay(L2(), torch.optim.Adam, iterations=1, assignment="learned").reconstruct(
        whole, batch.labels).extras["replay_assignment"] == "random"


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_learned_order_runs_on_a_batch_norm_victim(bn_mode):
    """The relaxed steps run all N samples through batch norm (train mode: statistics over all
    N, documented); the rounded order is a valid schedule and the replay stays finite."""
    model = build_model({"_target_": "deepleak.models.ResNet18", "width": 4, "activation_fn": "sigmoid"}, 10,
                        (3, 16, 16), seed=0)
    generator = torch.Generator().manual_seed(0)
    batch = PrivateBatch(torch.rand(4, 3, 16, 16, generator=generator), torch.tensor([0, 1, 2, 3]))
    obs = FedAvg(local_batch_size=2, epochs=2, lr=0.05, bn_mode=bn_mode).observe(model, batch, 10)
    result = FedAvgReplay(L2(), torch.optim.Adam, iterations=2, assignment="learned", assignment_iterations=2,
                    assignment_starts=2).reconstruct(obs, batch.labels)
    assert result.extras["replay_assignment"] == "learned" and math.isfinite(result.extras["relaxed_distance"])
    assert math.isfinite(result.gradient_distance) and torch.isfinite(result.images).all()
    schedule = result.extras["replay_schedule"]
    for epoch in (schedule[:2], schedule[2:]):
        assert sorted(i for step in epoch for i in step) == [0, 1, 2, 3]
