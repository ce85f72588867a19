"""The update transforms (noise, clip, prune, quantize, Soteria) on crafted tensors with
hand-computed answers; the default gradient; the defence configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from deepleak.defences import (
    DEFENCES,
    ClientContext,
    Clip,
    Defence,
    DefenceLike,
    NoDefence,
    Noise,
    Prune,
    Quantize,
    Soteria,
    mean_loss_gradient,
)
from deepleak.defences.soteria import representation_scores
from deepleak.models import LeNet

CONF = Path(__file__).resolve().parents[2] / "conf" / "defence"


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_context() -> ClientContext:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    return ClientContext(model=model, images=torch.rand(2, 1, 2, 2), labels=torch.tensor([0, 1]))


def apply(defence: Defence, *tensors: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """defend() on copies, checking that the inputs are left as they were."""
    before = [t.clone() for t in tensors]
    out = defence.defend(tensors, tiny_context(), generator(seed))
    assert all(torch.equal(t, b) for t, b in zip(tensors, before)), "defend modified its input"
    assert isinstance(out, tuple) and len(out) == len(tensors)
    return out


# --- the base class and the plain gradient -------------------------------------------------

def test_default_gradient_is_bit_identical_to_autograd():
    torch.manual_seed(0)
    model = LeNet(10, image_shape=(3, 16, 16), width=4).eval()
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([1, 7, 1])
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for got in (mean_loss_gradient(model, x, y), NoDefence().gradient(model, x, y, generator())):
        assert len(got) == len(expected)
        assert all(torch.equal(g, e) for g, e in zip(got, expected))
        assert not any(g.requires_grad for g in got)


def test_no_defence_is_the_identity_and_says_only_its_name():
    defence = NoDefence()
    tensors = (torch.tensor([1.0, -2.0]), torch.tensor([[3.0]]))
    out = apply(defence, *tensors)
    assert all(o is t for o, t in zip(out, tensors))
    assert defence.public() == {"name": "none"}
    assert defence.epsilon(10, 0.1) is None
    assert defence.per_step is False
    defence.check_model(nn.Conv2d(1, 1, 1), "train")  # accepts anything


def test_every_option_is_defence_like_and_registered_by_name():
    assert set(DEFENCES) == {"none", "noise", "clip", "prune", "quantize", "soteria", "dp_sgd", "secagg"}
    for name, cls in DEFENCES.items():
        defence = cls()
        assert isinstance(defence, Defence) and isinstance(defence, DefenceLike)
        assert defence.name == name and defence.public()["name"] == name
        assert defence.per_step is (name == "dp_sgd")


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_instantiates_to_its_option(path):
    defence = instantiate(OmegaConf.load(path))
    assert defence.public()["name"] == path.stem
    assert type(defence) is DEFENCES[path.stem]
    # Every constructor argument is in the YAML with the constructor's default.
    keys = set(OmegaConf.load(path)) - {"_target_"}
    assert defence.public() == {"name": path.stem, **{key: getattr(type(defence)(), key) for key in keys}}


def test_configs_cover_every_option():
    assert {path.stem for path in CONF.glob("*.yaml")} == set(DEFENCES)


# --- clip ----------------------------------------------------------------------------------

def test_clip_scales_the_update_to_max_norm():
    (out,) = apply(Clip(max_norm=1.0), torch.tensor([3.0, 4.0]))
    assert torch.allclose(out, torch.tensor([0.6, 0.8]), rtol=0, atol=1e-7)


def test_clip_takes_all_tensors_as_one_vector():
    a, b = apply(Clip(max_norm=2.5), torch.tensor([3.0]), torch.tensor([[4.0]]))
    assert torch.allclose(a, torch.tensor([1.5]), rtol=0, atol=1e-7)
    assert torch.allclose(b, torch.tensor([[2.0]]), rtol=0, atol=1e-7)


def test_clip_leaves_a_small_update_unchanged():
    update = torch.tensor([3.0, 4.0])
    (out,) = apply(Clip(max_norm=10.0), update)
    assert torch.equal(out, update)
    (zero,) = apply(Clip(max_norm=1.0), torch.zeros(3))
    assert torch.equal(zero, torch.zeros(3))


# --- prune ---------------------------------------------------------------------------------

def test_prune_zeroes_the_smallest_magnitudes():
    (out,) = apply(Prune(ratio=0.5), torch.tensor([1.0, -4.0, 2.0, -3.0]))
    assert torch.equal(out, torch.tensor([0.0, -4.0, 0.0, -3.0]))


def test_prune_is_per_tensor_and_rounds_down():
    # 3 entries at 0.5: floor(1.5) = 1 zeroed; 2x3 entries at 0.5: 3 zeroed.
    a, b = apply(Prune(ratio=0.5), torch.tensor([5.0, -0.5, 2.0]), torch.tensor([[6.0, -1.0, 4.0], [0.1, 3.0, -2.0]]))
    assert torch.equal(a, torch.tensor([5.0, 0.0, 2.0]))
    assert torch.equal(b, torch.tensor([[6.0, 0.0, 4.0], [0.0, 3.0, 0.0]]))
    (c,) = apply(Prune(ratio=0.29), torch.arange(1.0, 101.0))
    assert int((c == 0).sum()) == 29  # 0.29 * 100 is 28.999999999999996 in floating point
    assert torch.equal(c[29:], torch.arange(30.0, 101.0))


def test_prune_breaks_ties_by_position():
    (out,) = apply(Prune(ratio=0.5), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert torch.equal(out, torch.tensor([0.0, 0.0, 1.0, -1.0]))


def test_prune_ratio_zero_is_the_identity():
    update = torch.tensor([1.0, -4.0, 2.0])
    (out,) = apply(Prune(ratio=0.0), update)
    assert torch.equal(out, update)


# --- quantize ------------------------------------------------------------------------------

def test_quantize_two_bits():
    # levels 0, 1/3, 2/3, 1: 0.1 -> 0 (0.3 steps), 0.5 -> 2/3 (1.5 steps -> 2), 0.9 -> 1 (2.7 steps)
    (out,) = apply(Quantize(bits=2), torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 2 / 3, 1.0, 1.0]), rtol=0, atol=1e-7)


def test_quantize_rounds_half_to_even():
    # min 0, max 3, 2 bits: step 1 exactly; 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    (out,) = apply(Quantize(bits=2), torch.tensor([0.0, 0.5, 1.5, 2.5, 3.0]))
    assert torch.equal(out, torch.tensor([0.0, 0.0, 2.0, 2.0, 3.0]))


def test_quantize_uses_each_tensors_own_range_and_dtype():
    a, b, c = apply(
        Quantize(bits=1),
        torch.tensor([-2.0, -0.9, 0.9, 2.0]),
        torch.tensor([10.0, 10.4, 11.0], dtype=torch.float64),
        torch.full((2, 2), 7.0),
    )
    assert torch.equal(a, torch.tensor([-2.0, -2.0, 2.0, 2.0]))
    assert b.dtype == torch.float64 and torch.equal(b, torch.tensor([10.0, 10.0, 11.0], dtype=torch.float64))
    assert torch.equal(c, torch.full((2, 2), 7.0))  # constant: unchanged


def test_stochastic_quantize_picks_a_neighbouring_level_and_is_unbiased():
    values = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    update = values.repeat(100_000, 1)
    (out,) = apply(Quantize(bits=2, stochastic=True), update)
    step = 1 / 3
    below = torch.floor(values.double() / step) * step
    lower = torch.isclose(out.double(), below.expand_as(out), atol=1e-6)
    upper = torch.isclose(out.double(), (below + step).expand_as(out), atol=1e-6)
    assert bool((lower | upper).all())
    assert torch.allclose(out.double().mean(dim=0), values.double(), rtol=0, atol=3e-3)
    # 0.1 lies 0.3 of a step above level 0: about 30% of its draws go up.
    assert abs(float(upper[:, 1].double().mean()) - 0.3) < 0.01
    (again,) = apply(Quantize(bits=2, stochastic=True), update)
    assert torch.equal(out, again)  # the same generator seed gives the same draws


# --- noise ---------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_noise_has_the_requested_std(distribution):
    std = 0.5
    zeros = (torch.zeros(1000, 1000),)
    (out,) = apply(Noise(std=std, distribution=distribution), *zeros)
    assert abs(float(out.double().std()) / std - 1) < 0.02
    assert abs(float(out.double().mean())) < 0.005
    mean_absolute = float(out.double().abs().mean())
    if distribution == "laplace":
        assert abs(mean_absolute / (std / math.sqrt(2)) - 1) < 0.02  # E|x| = b
    else:
        assert abs(mean_absolute / (std * math.sqrt(2 / math.pi)) - 1) < 0.02
    assert bool(torch.isfinite(out).all())


def test_noise_is_added_to_every_tensor_from_the_generator():
    update = (torch.ones(50, 50), torch.full((7,), 2.0, dtype=torch.float64))
    first = apply(Noise(std=0.1), *update, seed=1)
    assert all(o.dtype == t.dtype for o, t in zip(first, update))
    assert all(not torch.equal(o, t) for o, t in zip(first, update))
    assert all(torch.equal(a, b) for a, b in zip(first, apply(Noise(std=0.1), *update, seed=1)))
    assert not torch.equal(first[0], apply(Noise(std=0.1), *update, seed=2)[0])


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_noise_with_zero_std_is_the_identity(distribution):
    update = (torch.tensor([1.0, -0.0, 3.5]),)
    (out,) = apply(Noise(std=0, distribution=distribution), *update)
    assert torch.equal(out, update[0])


# --- Soteria -------------------------------------------------------------------------------

def soteria_model(bias: bool = True) -> nn.Sequential:
    """Flatten -> Linear(4, 3) -> ReLU -> Linear(3, 2): the representation r = relu(W1 x) with
    rows of W1 of norms 1, 2, 3, so ||d r_j / d x|| = ||W1_j|| where r_j > 0, else 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=bias))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0]]))
        model[1].bias.zero_()
        model[3].weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]))
    return model


ONE_IMAGE = torch.tensor([4.0, 0.5, 2.0, 7.0]).reshape(1, 1, 2, 2)  # r = [4, 1, 6]
TWO_IMAGES = torch.tensor([[4.0, 0.5, 2.0, 7.0], [1.0, 1.0, -1.0, 0.0]]).reshape(2, 1, 2, 2)  # r = [1, 2, 0]


def soteria_update(model: nn.Module) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(3)
    return tuple(torch.randn_like(p) for p in model.parameters())


def test_soteria_scores_are_input_gradient_norm_over_feature():
    model = soteria_model()
    # score_j = sum_b ||W1_j|| [r_bj > 0] / |r_bj|: [1/4, 2/1, 3/6]; then + [1/1, 2/2, 0 (dead unit)].
    one = representation_scores(model, ONE_IMAGE)
    assert torch.allclose(one, torch.tensor([0.25, 2.0, 0.5], dtype=torch.float64), rtol=1e-8, atol=0)
    two = representation_scores(model, TWO_IMAGES)
    assert torch.allclose(two, torch.tensor([1.25, 3.0, 0.5], dtype=torch.float64), rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    ("images", "ratio", "pruned"),
    [
        (ONE_IMAGE, 0.5, [0]),  # percentile 50 of [0.25, 2, 0.5] is 0.5: only 0.25 is below
        (ONE_IMAGE, 0.9, [0, 2]),  # percentile 90 is 0.5 + 0.8 * 1.5 = 1.7
        (ONE_IMAGE, 0.0, []),
        (TWO_IMAGES, 0.5, [2]),  # [1.25, 3, 0.5]: percentile 50 is 1.25
    ],
)
def test_soteria_prunes_the_columns_of_the_smallest_scores(images, ratio, pruned):
    model = soteria_model()
    update = soteria_update(model)
    context = ClientContext(model=model, images=images, labels=torch.zeros(len(images), dtype=torch.int64))
    before = [t.clone() for t in update]
    out = Soteria(ratio=ratio).defend(update, context, generator())
    assert all(torch.equal(t, b) for t, b in zip(update, before))
    expected = update[2].clone()
    expected[:, pruned] = 0
    assert torch.equal(out[2], expected)
    for i in (0, 1, 3):
        assert torch.equal(out[i], update[i])


def test_soteria_finds_the_classifier_weight_by_identity():
    model = soteria_model(bias=False)  # the classifier's weight is the last parameter
    update = soteria_update(model)
    context = ClientContext(model=model, images=ONE_IMAGE, labels=torch.tensor([0]))
    out = Soteria(ratio=0.5).defend(update, context, generator())
    assert torch.equal(out[2][:, 0], torch.zeros(2)) and torch.equal(out[2][:, 1:], update[2][:, 1:])
    assert torch.equal(out[0], update[0]) and torch.equal(out[1], update[1])


def test_soteria_on_lenet_prunes_the_percentile_count():
    torch.manual_seed(0)
    model = LeNet(10).eval()
    images = torch.rand(4, 3, 32, 32)
    update = mean_loss_gradient(model, images, torch.tensor([0, 1, 2, 3]))
    out = Soteria(ratio=0.5).defend(update, ClientContext(model, images, torch.tensor([0, 1, 2, 3])), generator())
    # 768 distinct scores: percentile 50 lies halfway between the 384th and 385th; 384 below.
    zero_columns = (out[-2] == 0).all(dim=0)
    assert int(zero_columns.sum()) == 384
    assert torch.equal(out[-2][:, ~zero_columns], update[-2][:, ~zero_columns])
    assert all(torch.equal(o, u) for o, u in zip(out[:-2] + out[-1:], update[:-2] + update[-1:]))
    assert all(p.grad is None for p in model.parameters())


def test_soteria_with_batch_norm_in_train_mode_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Sigmoid(), nn.Linear(5, 3)
    )
    model.eval()
    model[1].train()
    images = torch.rand(3, 3, 8, 8)
    buffers = [b.clone() for b in model.buffers()]
    scores = representation_scores(model, images)
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), buffers))
    assert model[1].training and model[1].track_running_stats
    # The authors' loop: one backward per unit of the summed feature column.
    x = images.clone().requires_grad_(True)
    features = model[:6](x)
    expected = []
    for j in range(5):
        (g,) = torch.autograd.grad(features[:, j].sum(), x, retain_graph=True)
        expected.append((g.flatten(1).norm(dim=1).double() / (features[:, j].detach().double().abs() + 1e-9)).sum())
    assert torch.allclose(scores, torch.stack(expected), rtol=1e-5, atol=0)
