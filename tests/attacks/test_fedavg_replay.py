"""The replay's reverse pass (bisection with a bounded number of stored weight sets) gives the
image gradient of the fully unrolled graph, whatever the split."""

import pytest
import torch

from deepleak.attacks.engine import replay_client as replay_module
from deepleak.attacks.parts.distance import L2
from deepleak.attacks.engine.replay_client import Client
from deepleak.attacks.fedavg_replay import FedAvgReplay, make_schedule
from deepleak.models import build_model
from deepleak.scenarios import FedAvg, PrivateBatch

LENET = {"_target_": "deepleak.models.LeNet", "width": 6, "activation_fn": "sigmoid", "init_scale": 0.5}


@pytest.mark.parametrize("stores, whole", [(0, False), (1, False), (2, False), (5, False), (2, True)])
@pytest.mark.parametrize("every", [0, 3])
def test_reverse_pass_equals_the_unrolled_gradient(monkeypatch, stores, whole, every):
    monkeypatch.setattr(replay_module, "STORED_WEIGHTS", stores)
    if not whole:  # LeNet's weights are small: force the bisection a ResNet would take
        monkeypatch.setattr(replay_module, "SEGMENT_BYTES", 0)
    model = build_model(LENET, 10, (3, 12, 12), seed=0)
    generator = torch.Generator().manual_seed(0)
    batch = PrivateBatch(torch.rand(7, 3, 12, 12, generator=generator), torch.arange(7) % 10)
    observation = FedAvg(local_batch_size=1, epochs=1, lr=0.1).observe(model, batch, 10)
    schedule = make_schedule(batch.labels, 1, 1, torch.Generator().manual_seed(1), copies=False)
    assert len(schedule) == 7  # odd: uneven halves, and every branch of the split is taken
    start = [p.detach() for p in observation.model.parameters()]
    target = list(observation.gradient_view().gradient)
    dummies = torch.rand(7, 3, 12, 12, generator=generator)
    client = Client(observation.model, 0.1, schedule, checkpoint_every=every)
    distance, gradient = FedAvgReplay(L2(), torch.optim.LBFGS).weight_distance(client, start, dummies, target)

    leaf = dummies.clone().requires_grad_(True)
    weights = [w.clone().requires_grad_(True) for w in start]
    end = client.unrolled(weights, leaf)
    reference = L2()([(s - e) / (0.1 * 7) for s, e in zip(weights, end)], target)
    (expected,) = torch.autograd.grad(reference, [leaf])
    assert distance == pytest.approx(float(reference.detach()), rel=1e-5)
    torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-9)
    assert float(expected.abs().max()) > 0


@pytest.mark.parametrize("whole", [False, True])
def test_recomputation_stays_bounded(monkeypatch, whole):
    """Stored sets trade against recomputed steps: T = 16 from W_0 alone."""
    if not whole:
        monkeypatch.setattr(replay_module, "SEGMENT_BYTES", 0)
    calls = {"n": 0}
    original = Client.step

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Client, "step", counting)
    model = build_model(LENET, 10, (3, 8, 8), seed=0)
    batch = PrivateBatch(torch.rand(16, 3, 8, 8), torch.arange(16) % 10)
    observation = FedAvg(local_batch_size=1, epochs=1, lr=0.1).observe(model, batch, 10)
    schedule = make_schedule(batch.labels, 1, 1, torch.Generator().manual_seed(1), copies=False)
    client = Client(observation.model, 0.1, schedule)
    start = [p.detach() for p in observation.model.parameters()]
    FedAvgReplay(L2(), torch.optim.LBFGS).weight_distance(client, start, torch.rand(16, 3, 8, 8),
                                                    list(observation.gradient_view().gradient))
    # 16 forward + 16 reverse steps + recomputation: small weights, checkpoints every 4 steps
    # and each segment stored whole (3 steps each), or bisection (2 stores) then quadratic.
    recomputed = calls["n"] - 32
    if whole:
        assert recomputed == 4 * 3
    else:
        assert 15 < recomputed <= 16 * 4, recomputed


@pytest.mark.parametrize("scheme, step, bar", [("forward", 1e-7, 1e-4), ("central", 1e-5, 1e-6)])
def test_finite_difference_reverse_pass_matches_the_exact_one(scheme, step, bar):
    """Each reverse step by two (three) first-order passes instead of a double backward: the
    image gradient of the whole replay agrees with the exact one (float64, E = 2, B = 2)."""
    from deepleak.attacks.engine.image_gradient import FiniteDifference

    model = build_model(LENET, 10, (3, 12, 12), seed=0).double()
    generator = torch.Generator().manual_seed(0)
    batch = PrivateBatch(torch.rand(4, 3, 12, 12, generator=generator, dtype=torch.float64), torch.arange(4) % 10)
    observation = FedAvg(local_batch_size=2, epochs=2, lr=0.1).observe(model, batch, 10)
    schedule = make_schedule(batch.labels, 2, 2, torch.Generator().manual_seed(1), copies=False)
    start = [p.detach() for p in observation.model.parameters()]
    target = list(observation.gradient_view().gradient)
    dummies = torch.rand(4, 3, 12, 12, generator=generator, dtype=torch.float64)
    replay = FedAvgReplay(L2(), torch.optim.LBFGS)
    exact = replay.weight_distance(Client(observation.model, 0.1, schedule), start, dummies, target)
    route = FiniteDifference(scheme, step=step)
    approx = replay.weight_distance(Client(observation.model, 0.1, schedule, finite_difference=route), start, dummies, target)
    assert approx[0] == exact[0]  # the forward replay is the same
    error = float((approx[1] - exact[1]).norm() / exact[1].norm())
    assert error < bar, error
    assert float(exact[1].abs().max()) > 0


def test_finite_difference_replay_calibrates_records_and_refuses_kinks():
    from deepleak.attacks.engine.image_gradient import FiniteDifference
    from deepleak.errors import DeepleakError

    model = build_model(LENET, 10, (3, 12, 12), seed=0)
    batch = PrivateBatch(torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0)), torch.arange(4) % 10)
    observation = FedAvg(local_batch_size=2, epochs=2, lr=0.1).observe(model, batch, 10)
    result = FedAvgReplay(L2(), torch.optim.Adam, iterations=3, image_gradient=FiniteDifference()).reconstruct(
        observation, batch.labels)
    assert result.extras["image_gradient_agreement"] > 0.999 and 0 < result.extras["image_gradient_step"] < 1e-2
    relu = build_model({**LENET, "activation_fn": "relu"}, 10, (3, 12, 12), seed=0)
    observation = FedAvg(local_batch_size=2, epochs=2, lr=0.1).observe(relu, batch, 10)
    with pytest.raises(DeepleakError, match="smooth victim"):
        FedAvgReplay(L2(), torch.optim.Adam, iterations=3, image_gradient=FiniteDifference()).reconstruct(observation, batch.labels)
