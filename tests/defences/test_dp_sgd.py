"""DP-SGD against a plain per-sample loop with torch.autograd and against Opacus's own
accountant."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn

from deepleak.defences import DPSGD, ClientContext, mean_loss_gradient


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_batch(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    images = torch.randn(6, 5) * torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])[:, None]
    return model, images, torch.tensor([0, 1, 2, 0, 1, 2])


def loop_per_sample(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[list[torch.Tensor]]:
    """Each sample's gradient by a plain loop: one autograd call per sample."""
    params = list(model.parameters())
    return [
        list(torch.autograd.grad(F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]), params))
        for i in range(len(labels))
    ]


def flat_norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def median_norm() -> float:
    model, images, labels = tiny_batch()
    norms = sorted(flat_norm(g) for g in loop_per_sample(model, images, labels))
    return (norms[2] + norms[3]) / 2


def test_every_clipped_per_sample_norm_is_at_most_c():
    model, images, labels = tiny_batch()
    raw = [flat_norm(g) for g in loop_per_sample(model, images, labels)]
    c = median_norm()
    assert sum(n > c for n in raw) == 3 and sum(n < c for n in raw) == 3  # some are clipped, some not
    clipped = DPSGD(max_norm=c, noise_multiplier=0.0).clipped_per_sample(model, images, labels)
    assert [tuple(g.shape) for g in clipped] == [(6, *p.shape) for p in model.parameters()]
    norms = torch.stack([g.reshape(6, -1).double().norm(dim=1) for g in clipped]).norm(dim=0)
    assert bool((norms <= c + 1e-6).all())
    for i, n in enumerate(raw):  # the unclipped keep their norm, the clipped land on C
        assert abs(float(norms[i]) - min(n, c)) < 1e-5


def test_noiseless_gradient_is_the_mean_of_loop_clipped_gradients():
    model, images, labels = tiny_batch()
    c = median_norm()
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for sample in loop_per_sample(model, images, labels):
        factor = min(1.0, c / (flat_norm(sample) + 1e-6))  # Opacus's clip factor
        for e, g in zip(expected, sample):
            e += factor * g / len(labels)
    got = DPSGD(max_norm=c, noise_multiplier=0.0).gradient(model, images, labels, generator())
    assert len(got) == len(expected)
    assert all(torch.allclose(g, e, rtol=0, atol=1e-6) for g, e in zip(got, expected))
    # Clipping changed the answer: it is not the plain mean gradient.
    plain = mean_loss_gradient(model, images, labels)
    assert not all(torch.allclose(g, p, rtol=0, atol=1e-4) for g, p in zip(got, plain))


@pytest.mark.parametrize("bn", [False, True])
def test_unclipped_noiseless_gradient_is_the_mean_loss_gradient(bn):
    torch.manual_seed(1)
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)] if bn else [nn.Conv2d(3, 4, 3)]
    model = nn.Sequential(*layers, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    if bn:  # eval-mode batch norm with non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 4, 4, 2])
    got = DPSGD(max_norm=1e9, noise_multiplier=0.0).gradient(model, images, labels, generator())
    expected = mean_loss_gradient(model, images, labels)
    assert all(torch.allclose(g, e, rtol=0, atol=1e-6) for g, e in zip(got, expected))


def test_noise_std_is_sigma_times_c_on_the_sum():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 3))
    images, labels = torch.randn(4, 50), torch.tensor([0, 1, 2, 1])
    sigma, c = 0.7, 0.3
    defence = DPSGD(max_norm=c, noise_multiplier=sigma)
    noiseless = DPSGD(max_norm=c, noise_multiplier=0.0).gradient(model, images, labels, generator())
    gen = generator(5)
    noise = torch.cat([
        torch.cat([((g - n) * len(labels)).reshape(-1) for g, n in zip(defence.gradient(model, images, labels, gen), noiseless)])
        for _ in range(40)
    ]).double()
    assert noise.numel() > 400_000
    assert abs(float(noise.std()) / (sigma * c) - 1) < 0.02
    assert abs(float(noise.mean())) < 0.01 * sigma * c
    # The draws come from the generator: the same seed gives the same gradient.
    first = defence.gradient(model, images, labels, generator(9))
    again = defence.gradient(model, images, labels, generator(9))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_dp_sgd_is_per_step_and_its_defend_is_the_identity():
    defence = DPSGD()
    assert defence.per_step is True
    model, images, labels = tiny_batch()
    update = tuple(torch.randn_like(p) for p in model.parameters())
    out = defence.defend(update, ClientContext(model, images, labels), generator())
    assert all(o is u for o, u in zip(out, update))
    assert defence.public() == {"name": "dp_sgd", "max_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5, "accountant": "rdp"}


@pytest.mark.parametrize(("accountant", "cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_is_opacus_accountants(accountant, cls):
    sigma, q, steps, delta = 1.1, 0.01, 200, 1e-5
    reference = cls()
    for _ in range(steps):
        reference.step(noise_multiplier=sigma, sample_rate=q)
    expected = reference.get_epsilon(delta=delta)
    got = DPSGD(max_norm=1.0, noise_multiplier=sigma, delta=delta, accountant=accountant).epsilon(steps, q)
    assert got == {
        "epsilon": pytest.approx(expected, rel=1e-12),
        "delta": delta,
        "accountant": f"opacus {cls.__name__}",
        "steps": steps,
        "sample_rate": q,
    }
    assert 0 < got["epsilon"] < math.inf


def test_epsilon_grows_with_steps_and_is_infinite_without_noise():
    defence = DPSGD(noise_multiplier=1.0)
    assert defence.epsilon(10, 0.1)["epsilon"] < defence.epsilon(100, 0.1)["epsilon"]
    assert defence.epsilon(0, 0.1)["epsilon"] == 0.0
    assert DPSGD(noise_multiplier=0.0).epsilon(10, 0.1)["epsilon"] == math.inf
