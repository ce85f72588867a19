"""The attacker's model of a public defence: exact objective values per defence, candidate
updates that keep the image graph, and an inversion the adaptive model wins."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepleak.attacks.parts.defence_model import DefenceModel
from deepleak.attacks.parts.distance import L2, Cosine
from deepleak.errors import DeepleakError

D = torch.float64


def crafted() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(candidate, target) with sum((c - t)^2) = 0.5 and sum|c - t| = 1."""
    candidate = [torch.tensor([1.0, 2.0], dtype=D), torch.tensor([[0.5]], dtype=D)]
    target = [torch.tensor([1.0, 1.5], dtype=D), torch.tensor([[0.0]], dtype=D)]
    return candidate, target


def random_tensors(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=D) for shape in [(6, 5), (6,), (3, 6), (3,)]]


def tiny_model(seed: int = 0, inputs: int = 5, hidden: int = 6, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Sigmoid(), nn.Linear(hidden, classes)).to(D)


def plain_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(F.cross_entropy(model(images), labels), list(model.parameters())))


# ------------------------------------------------------------------ no defence modelled
@pytest.mark.parametrize("fallback", [L2(), Cosine()], ids=["l2", "cosine"])
@pytest.mark.parametrize("public, adaptive", [
    (None, True),
    ({"name": "none"}, True),
    ({"name": "secagg", "clients": 4}, True),
    ({"name": "noise", "std": 0.0, "distribution": "gaussian"}, True),
    ({"name": "noise", "std": 0.1, "distribution": "laplace"}, False),
    ({"name": "prune", "ratio": 0.9}, False),
    ({"name": "quantize", "bits": 4, "stochastic": False}, False),
    ({"name": "dp_sgd", "max_norm": 1.0, "noise_multiplier": 1.0}, False),
], ids=["None", "none", "secagg", "zero-noise", "naive-noise", "naive-prune", "naive-quantize", "naive-dp_sgd"])
def test_unmodelled_defences_leave_the_recipe_objective_as_it_is(public, adaptive, fallback):
    model = DefenceModel(public, adaptive=adaptive, step_batch_size=2)
    candidate, target = random_tensors(0), random_tensors(1)
    target[0][0, :3] = 0  # as if pruned: the naive attacker matches the zeros too
    assert not model.modifies and model.adaptations == []
    assert model.distance(candidate, target, fallback).item() == fallback(candidate, target).item()
    assert model.record() == {"adaptive": adaptive, "modelled": False, "adaptations": []}
    victim, images, labels = tiny_model(), torch.rand(2, 5, dtype=D), torch.tensor([0, 2])
    for got, expected in zip(model.candidate_gradient(victim, images, labels), plain_gradient(victim, images, labels)):
        assert torch.equal(got.detach(), expected)


# ------------------------------------------------------------------ noise likelihoods
@pytest.mark.parametrize("fallback", [L2(), Cosine()], ids=["l2", "cosine"])
def test_gaussian_noise_is_the_squared_error_over_twice_the_variance(fallback):
    candidate, target = crafted()
    model = DefenceModel({"name": "noise", "std": 0.01, "distribution": "gaussian"})
    assert model.modifies and "gaussian likelihood" in model.adaptations[0]
    assert model.distance(candidate, target, fallback).item() == pytest.approx(0.5 / (2 * 0.01**2), rel=1e-12)
    # FedAvg target = update * 0.5: the noise std is halved in target units.
    halved = DefenceModel({"name": "noise", "std": 0.01, "distribution": "gaussian"}, scale=0.5)
    assert halved.distance(candidate, target, fallback).item() == pytest.approx(0.5 / (2 * 0.005**2), rel=1e-12)
    negative = DefenceModel({"name": "noise", "std": 0.01, "distribution": "gaussian"}, scale=-0.5)
    assert negative.distance(candidate, target, fallback).item() == pytest.approx(10000.0, rel=1e-12)


def test_laplace_noise_is_the_absolute_error_over_b():
    candidate, target = crafted()
    model = DefenceModel({"name": "noise", "std": 0.01, "distribution": "laplace"})
    assert "laplace likelihood" in model.adaptations[0]
    assert model.distance(candidate, target, L2()).item() == pytest.approx(1.0 / (0.01 / math.sqrt(2)), rel=1e-12)


def test_likelihoods_keep_the_candidate_graph():
    candidate, target = crafted()
    candidate = [c.requires_grad_(True) for c in candidate]
    for distribution in ("gaussian", "laplace"):
        model = DefenceModel({"name": "noise", "std": 0.5, "distribution": distribution})
        gradient = torch.autograd.grad(model.distance(candidate, target, L2()), candidate)
        expected = [(c - t) / 0.25 if distribution == "gaussian" else torch.sign(c - t) * math.sqrt(2) / 0.5
                    for c, t in zip(candidate, target)]
        for got, want in zip(gradient, expected):
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=0)


def test_dp_sgd_noise_std_is_sigma_c_over_b_sqrt_t():
    candidate, target = crafted()  # squared error 0.5
    public = {"name": "dp_sgd", "max_norm": 2.0, "noise_multiplier": 1.0, "delta": 1e-5, "accountant": "rdp"}
    fedsgd = DefenceModel(public, step_batch_size=4)  # s = 1 * 2 / 4 = 0.5
    assert fedsgd.distance(candidate, target, Cosine()).item() == pytest.approx(0.5 / (2 * 0.25), rel=1e-12)
    fedavg = DefenceModel(public, scale=1 / (0.1 * 4), steps=4, step_batch_size=4)  # s = 0.5 / 2, scale unused
    assert fedavg.distance(candidate, target, Cosine()).item() == pytest.approx(0.5 / (2 * 0.0625), rel=1e-12)
    assert len(fedavg.adaptations) == 2 and "per-sample clipping at C = 2" in fedavg.adaptations[0]


def test_dp_sgd_batch_size_defaults_to_the_candidate_batch():
    public = {"name": "dp_sgd", "max_norm": 2.0, "noise_multiplier": 1.0}
    model = DefenceModel(public)
    candidate, target = crafted()
    with pytest.raises(DeepleakError, match="step_batch_size"):
        model.distance(candidate, target, L2())
    model.candidate_gradient(tiny_model(), torch.rand(4, 5, dtype=D), torch.tensor([0, 1, 2, 0]))
    assert model.dp_noise_std() == 0.5
    assert model.distance(candidate, target, L2()).item() == pytest.approx(1.0, rel=1e-12)


def test_dp_sgd_without_noise_models_the_clipping_only():
    candidate, target = random_tensors(0), random_tensors(1)
    model = DefenceModel({"name": "dp_sgd", "max_norm": 1.0, "noise_multiplier": 0.0}, step_batch_size=2)
    assert model.modifies and len(model.adaptations) == 1
    fallback = Cosine()
    assert model.distance(candidate, target, fallback).item() == fallback(candidate, target).item()


# ------------------------------------------------------------------ visible zeros
@pytest.mark.parametrize("name", ["prune", "soteria"])
@pytest.mark.parametrize("fallback", [L2(), Cosine()], ids=["l2", "cosine"])
def test_zeroed_target_entries_do_not_pull_the_candidate(name, fallback):
    model = DefenceModel({"name": name, "ratio": 0.5})
    candidate, target = random_tensors(0), random_tensors(1)
    target[0][:, 1] = 0
    target[3][2] = 0
    before = model.distance(candidate, target, fallback).item()
    hidden = [c.clone() for c in candidate]
    hidden[0][:, 1] += 5.0
    hidden[3][2] -= 3.0
    assert model.distance(hidden, target, fallback).item() == before
    assert DefenceModel({"name": name, "ratio": 0.5}, adaptive=False).distance(hidden, target, fallback).item() != before
    visible = [c.clone() for c in candidate]
    visible[0][:, 0] += 5.0
    assert model.distance(visible, target, fallback).item() != pytest.approx(before)
    # The value is the fallback on the masked candidate.
    masked = [c.clone() for c in candidate]
    masked[0][:, 1] = 0
    masked[3][2] = 0
    assert before == pytest.approx(fallback(masked, target).item(), rel=1e-12)


def test_the_mask_follows_the_target():
    model = DefenceModel({"name": "prune", "ratio": 0.5})
    candidate, target = random_tensors(0), random_tensors(1)
    target[1][0] = 0
    first = model.distance(candidate, target, L2()).item()
    target[1][0] = candidate[1][0] + 1  # in place: the entry survives now and adds 1
    assert model.distance(candidate, target, L2()).item() == pytest.approx(first + 1, rel=1e-12)


# ------------------------------------------------------------------ quantisation
def quantised_target() -> list[torch.Tensor]:
    """2 bits, min 0 and max 1.5: step d = 0.5; the second tensor is constant (d = 0)."""
    return [torch.tensor([0.0, 0.5, 1.5, 1.0], dtype=D), torch.tensor([2.0, 2.0], dtype=D)]


def test_deterministic_quantisation_is_flat_within_half_a_step():
    model = DefenceModel({"name": "quantize", "bits": 2, "stochastic": False})
    target = quantised_target()
    inside = [target[0] + torch.tensor([0.25, -0.25, 0.125, 0.0], dtype=D), target[1].clone()]
    assert model.distance(inside, target, L2()).item() == 0
    off = [target[0] + torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=D), target[1].clone()]
    assert model.distance(off, target, L2()).item() == pytest.approx(0.25, rel=1e-12)  # (d/2)^2 / d^2
    constant = [target[0].clone(), target[1] + torch.tensor([0.0, 0.5], dtype=D)]
    assert model.distance(constant, target, L2()).item() == pytest.approx(0.25, rel=1e-12)  # weight 1


def test_stochastic_quantisation_is_the_squared_error_over_the_step_squared():
    model = DefenceModel({"name": "quantize", "bits": 2, "stochastic": True})
    target = quantised_target()
    off = [target[0] + torch.tensor([0.5, 0.25, 0.0, 0.0], dtype=D), target[1] + torch.tensor([0.0, 0.5], dtype=D)]
    assert model.distance(off, target, Cosine()).item() == pytest.approx((0.25 + 0.0625) / 0.25 + 0.25, rel=1e-12)


# ------------------------------------------------------------------ the candidate update
@pytest.mark.parametrize("max_norm, scale", [(0.05, 0.5), (0.05, 2.0), (1e3, 1.0)], ids=["clipped", "scaled", "unclipped"])
def test_clip_scales_the_candidate_to_the_public_norm_in_target_units(max_norm, scale):
    victim, images, labels = tiny_model(1), torch.rand(3, 5, dtype=D), torch.tensor([0, 1, 2])
    plain = plain_gradient(victim, images, labels)
    norm = math.sqrt(sum(float(g.square().sum()) for g in plain))
    assert 0.05 < norm < 1e3
    model = DefenceModel({"name": "clip", "max_norm": max_norm}, scale=scale)
    x = images.clone().requires_grad_(True)
    candidate = model.candidate_gradient(victim, x, labels)
    clipped = math.sqrt(sum(float(c.detach().square().sum()) for c in candidate))
    assert clipped == pytest.approx(min(norm, max_norm * scale), abs=1e-6)
    factor = min(1.0, max_norm * scale / norm)
    for c, g in zip(candidate, plain):
        torch.testing.assert_close(c.detach(), g * factor, rtol=1e-9, atol=1e-12)
    fallback = L2()
    target = [torch.ones_like(g) for g in plain]
    value = model.distance(candidate, target, fallback)
    assert value.item() == fallback(candidate, target).item()
    image_gradient = torch.autograd.grad(value, x)[0]  # the clip factor keeps the image graph
    assert bool(torch.isfinite(image_gradient).all()) and float(image_gradient.abs().sum()) > 0


def per_sample_clipped_mean(victim: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                            max_norm: float) -> list[torch.Tensor]:
    """The reference: a plain loop over samples, each gradient clipped as Opacus does."""
    total = None
    for i in range(len(images)):
        gradient = plain_gradient(victim, images[i:i + 1], labels[i:i + 1])
        norm = math.sqrt(sum(float(g.square().sum()) for g in gradient))
        factor = min(1.0, max_norm / (norm + 1e-6))
        clipped = [g * factor for g in gradient]
        total = clipped if total is None else [t + c for t, c in zip(total, clipped)]
    return [t / len(images) for t in total]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_dp_sgd_candidate_is_the_mean_of_clipped_per_sample_gradients(soft):
    victim, images = tiny_model(2), torch.rand(4, 5, dtype=D)
    labels = torch.tensor([0, 1, 2, 1])
    if soft:
        labels = torch.softmax(torch.randn(4, 3, dtype=D, generator=torch.Generator().manual_seed(0)), dim=1)
    norms = sorted(math.sqrt(sum(float(g.square().sum()) for g in plain_gradient(victim, images[i:i + 1], labels[i:i + 1])))
                   for i in range(4))
    max_norm = (norms[1] + norms[2]) / 2  # two samples clipped, two not
    model = DefenceModel({"name": "dp_sgd", "max_norm": max_norm, "noise_multiplier": 1.0}, step_batch_size=4)
    x = images.clone().requires_grad_(True)
    candidate = model.candidate_gradient(victim, x, labels)
    reference = per_sample_clipped_mean(victim, images, labels, max_norm)
    for c, r in zip(candidate, reference):
        torch.testing.assert_close(c.detach(), r, rtol=0, atol=1e-6)
    plain_mean = plain_gradient(victim, images, labels)
    assert any(not torch.allclose(c.detach(), p) for c, p in zip(candidate, plain_mean))  # clipping did something
    target = [r + 0.01 for r in reference]
    image_gradient = torch.autograd.grad(model.distance(candidate, target, L2()), x)[0]
    assert bool(torch.isfinite(image_gradient).all()) and float(image_gradient.abs().sum()) > 0


# ------------------------------------------------------------------ inversions
def prune_by_hand(gradient: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Per tensor, zero the ``ratio`` fraction of entries with the smallest magnitude."""
    pruned = []
    for g in gradient:
        k = int(ratio * g.numel())
        threshold = g.abs().reshape(-1).kthvalue(k).values if k else g.new_tensor(-1.0)
        pruned.append(torch.where(g.abs() > threshold, g, torch.zeros_like(g)))
    return pruned


def quantise_by_hand(gradient: list[torch.Tensor], bits: int) -> list[torch.Tensor]:
    """Per tensor, round to the nearest of 2**bits levels between its min and max."""
    quantised = []
    for g in gradient:
        low, step = g.min(), (g.max() - g.min()) / (2**bits - 1)
        quantised.append(low + torch.round((g - low) / step) * step)
    return quantised


def invert(victim: nn.Module, target: list[torch.Tensor], labels: torch.Tensor, model: DefenceModel,
           shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Dummy images after L-BFGS on the defence model's objective (L2 recipe)."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=D).requires_grad_(True)
    optimizer = torch.optim.LBFGS([images], lr=1, max_iter=100, history_size=100, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-14, tolerance_change=1e-16)
    fallback = L2()

    def closure():
        optimizer.zero_grad()
        value = model.distance(model.candidate_gradient(victim, images, labels), target, fallback)
        value.backward()
        return value

    optimizer.step(closure)
    return images.detach()


def inversion_errors(public: dict, defend, seed: int) -> tuple[float, float]:
    """(naive, adaptive) MSE to the true batch of 2 images (16 pixels) of a sigmoid MLP."""
    victim = tiny_model(seed, inputs=16, hidden=32, classes=4)
    truth = torch.rand(2, 16, generator=torch.Generator().manual_seed(100 + seed), dtype=D)
    labels = torch.tensor([0, 1])
    target = defend(plain_gradient(victim, truth, labels))
    errors = []
    for adaptive in (False, True):
        images = invert(victim, target, labels, DefenceModel(public, adaptive=adaptive), truth.shape, seed)
        errors.append(float((images - truth).square().mean()))
    return errors[0], errors[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_adaptive_attacker_inverts_a_pruned_gradient_better(seed):
    """Measured (seeds 0-7): naive MSE 6.8 .. 2.3e4 (it chases the zeros out of [0, 1]),
    adaptive 1e-15 .. 0.03 (51 surviving entries of the first layer pin 32 pixels)."""
    naive, adaptive = inversion_errors({"name": "prune", "ratio": 0.9}, lambda g: prune_by_hand(g, 0.9), seed)
    assert adaptive < naive / 10


@pytest.mark.parametrize("seed", [0, 1])
def test_the_dead_zone_inverts_a_quantised_gradient_better(seed):
    """4 bits, measured (seeds 0-5): naive MSE 1.9e-3 .. 9.1e-3, dead zone 1.3e-4 .. 3.4e-4
    (stochastic-style weighted L2: 1.4e-4 .. 3.8e-4)."""
    public = {"name": "quantize", "bits": 4, "stochastic": False}
    naive, adaptive = inversion_errors(public, lambda g: quantise_by_hand(g, 4), seed)
    assert adaptive < naive / 3


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("public, kwargs, match", [
    ({"name": "blur"}, {}, "unknown defence 'blur'"),
    ({"name": "noise", "std": 0.1, "distribution": "uniform"}, {}, "distribution"),
    ({"name": "noise"}, {}, "lacks 'std'"),
    ({"name": "noise", "std": -1}, {}, "std must be >= 0"),
    ({"name": "clip", "max_norm": 0}, {}, "max_norm must be > 0"),
    ({"name": "prune", "ratio": 1.0}, {}, "ratio must be < 1"),
    ({"name": "quantize", "bits": 2.5}, {}, "whole number"),
    ({"name": "dp_sgd", "max_norm": 1.0, "noise_multiplier": "a"}, {}, "must be a number"),
    (None, {"scale": 0.0}, "scale"),
    (None, {"steps": 0}, "steps"),
    (None, {"step_batch_size": 0}, "step_batch_size"),
], ids=["unknown", "distribution", "missing", "negative-std", "zero-norm", "full-prune", "bits", "not-a-number",
        "scale", "steps", "batch"])
def test_bad_descriptions_are_user_errors(public, kwargs, match):
    with pytest.raises(DeepleakError, match=match):
        DefenceModel(public, **kwargs)


def test_record_lists_the_adaptations():
    model = DefenceModel({"name": "prune", "ratio": 0.9})
    assert model.record() == {"adaptive": True, "modelled": True, "adaptations": [
        "matches only the 10% of entries that survived pruning (target != 0)"]}
