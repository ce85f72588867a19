"""FedSGD scenario: the shared gradient, the server's copy of the model, and what an
Observation may (and may not) carry across the threat-model boundary."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepleak.models import build_model
from deepleak.scenarios.base import Observation, PrivateBatch, Recipe
from deepleak.scenarios.recipe import set_bn_mode
from deepleak.scenarios.fedsgd import FedSGD

LENET_CFG = {"_target_": "deepleak.models.LeNet", "width": 12, "activation_fn": "sigmoid", "init_scale": 0.5}
RESNET_CFG = {"_target_": "deepleak.models.ResNet18", "width": 8, "activation_fn": "sigmoid"}



def _batch(k, num_classes, shape=(3, 32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((k, *shape), generator=g)
    labels = torch.randint(num_classes, (k,), generator=g)
    return PrivateBatch(images=images, labels=labels)


def _reference_gradient(model, batch, train=False):
    """Gradient of the mean cross-entropy, computed here without the library."""
    import copy

    ref = copy.deepcopy(model)
    ref.train(train)
    for p in ref.parameters():
        p.grad = None
    loss = F.cross_entropy(ref(batch.images), batch.labels, reduction="sum") / len(batch)
    loss.backward()
    return [p.grad.clone() for p in ref.parameters()]


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, snapshot):
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_gradient_is_mean_cross_entropy(k):
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=k)
    batch = _batch(k, 10, seed=k)
    obs = FedSGD().observe(model, batch, num_classes=10)
    expected = _reference_gradient(model, batch)
    assert obs.gradient is not None and obs.weights is None
    assert len(obs.gradient) == len(expected) == len(list(model.parameters()))
    for got, want, (name, p) in zip(obs.gradient, expected, model.named_parameters()):
        assert got.shape == p.shape, name
        assert not got.requires_grad, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)
    # Keyed access follows named_parameters().
    named = obs.named_gradient()
    assert list(named) == [n for n, _ in model.named_parameters()]
    assert torch.equal(named["fc.weight"], obs.gradient[-2])


def test_gradient_is_mean_not_sum():
    """Duplicating the batch leaves the mean-loss gradient unchanged."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    batch = _batch(3, 10)
    doubled = PrivateBatch(torch.cat([batch.images] * 2), torch.cat([batch.labels] * 2))
    g1 = FedSGD().observe(model, batch, 10).gradient
    g2 = FedSGD().observe(model, doubled, 10).gradient
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_classifier_gradient_matches_formula():
    """dL/dW = (1/K) (P - Y)^T O and dL/db = mean(P - Y): the identity label methods use."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    batch = _batch(6, 10)
    obs = FedSGD().observe(model, batch, 10)
    with torch.no_grad():
        features = model.body(batch.images)
        p = torch.softmax(model.fc(features), dim=1)
    residual = p - F.one_hot(batch.labels, 10).float()
    named = obs.named_gradient()
    torch.testing.assert_close(named["fc.weight"], residual.T @ features / 6, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(named["fc.bias"], residual.mean(0), rtol=1e-4, atol=1e-6)


def test_observation_model_is_a_separate_copy_at_global_weights():
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    before = _snapshot(model)
    obs = FedSGD().observe(model, _batch(4, 10), 10)
    # The original is untouched: same weights, no gradient accumulated on it.
    assert _same_state(model, before)
    assert all(p.grad is None for p in model.parameters())
    # The server's copy holds the global weights W_0 (not a stepped model) in fresh tensors.
    assert obs.model is not model
    assert _same_state(obs.model, before)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(obs.model.parameters(), model.parameters()))
    # Mutating the copy leaves the original alone, and the other way round.
    with torch.no_grad():
        for p in obs.model.parameters():
            p.add_(1.0)
    assert _same_state(model, before)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.0)
    assert not torch.equal(obs.model.fc.weight, model.fc.weight)


def test_observation_fields_carry_no_private_data():
    names = [f.name for f in dataclasses.fields(Observation)]
    assert names == ["scenario", "model", "recipe", "gradient", "weights", "metadata", "defence"]
    batch = _batch(4, 10)
    obs = FedSGD().observe(build_model(LENET_CFG, 10, (3, 32, 32), seed=0), batch, 10)
    assert obs.scenario == "fedsgd"
    assert obs.metadata == {}
    for attr in ("images", "labels", "batch", "targets", "indices"):
        assert not hasattr(obs, attr), attr
    # Frozen: the attacker cannot attach anything to it afterwards.
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.gradient = None  # type: ignore[misc]
    # Nothing in the observation is the private tensor itself.
    leaves = [obs.recipe, *obs.gradient, *obs.metadata.values()]
    assert not any(x is batch.images or x is batch.labels for x in leaves)
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    assert not recipe_fields & {"images", "labels", "indices"}


def test_recipe_fields():
    batch = _batch(5, 20, shape=(3, 16, 16))
    obs = FedSGD().observe(build_model(LENET_CFG, 20, (3, 16, 16), seed=0), batch, num_classes=20)
    r = obs.recipe
    assert isinstance(r, Recipe)
    assert r.num_samples == 5 and r.batch_size == 5
    assert r.num_classes == 20
    assert r.image_shape == (3, 16, 16) and isinstance(r.image_shape, tuple)
    assert r.bn_mode == "train"
    assert r.epochs == 1
    assert FedSGD(bn_mode="eval").observe(build_model(LENET_CFG, 20, (3, 16, 16), seed=0), batch, 20).recipe.bn_mode == "eval"


def test_bn_train_mode_resnet_gradient():
    model = build_model(RESNET_CFG, 10, (3, 32, 32), seed=0)
    model.eval()  # the mode the caller left it in must not matter
    before = _snapshot(model)
    batch = _batch(4, 10)
    obs = FedSGD(bn_mode="train").observe(model, batch, 10)
    expected = _reference_gradient(model, batch, train=True)
    for got, want, (name, _) in zip(obs.gradient, expected, model.named_parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    # Batch statistics differ from running statistics here, so eval mode gives another gradient.
    eval_grad = _reference_gradient(model, batch, train=False)
    assert not torch.allclose(obs.gradient[0], eval_grad[0], rtol=1e-3, atol=1e-6)
    # The client's forward in train mode updates running stats on its own copy only.
    assert _same_state(model, before)
    assert _same_state(obs.model, before)


def test_bn_eval_mode_resnet_gradient():
    model = build_model(RESNET_CFG, 10, (3, 32, 32), seed=0)
    # Give the running statistics non-default values so that eval mode is distinguishable.
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32))
    batch = _batch(3, 10, seed=1)
    obs = FedSGD(bn_mode="eval").observe(model, batch, 10)
    expected = _reference_gradient(model, batch, train=False)
    for got, want, (name, _) in zip(obs.gradient, expected, model.named_parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


def test_set_bn_mode():
    model = build_model(RESNET_CFG, 10, (3, 32, 32), seed=0)
    set_bn_mode(model, "train")
    for m in model.modules():
        is_bn = isinstance(m, nn.BatchNorm2d)
        assert m.training == is_bn
    set_bn_mode(model, "eval")
    assert not any(m.training for m in model.modules())
    with pytest.raises(ValueError):
        set_bn_mode(model, "both")


def test_named_gradient_without_gradient():
    obs = Observation(scenario="fedavg", model=nn.Linear(2, 2), recipe=Recipe(1, 1, 2, (1, 1, 2)))
    with pytest.raises(ValueError):
        obs.named_gradient()
