"""Batched restarts (torch.func.vmap) give what the sequential restart loop gives."""

import functools
import math

import pytest
import torch

from deepleak.attacks import GradientMatching
from deepleak.attacks.engine.batched_restarts import BatchedFiniteDifference, BatchedObjective, reconstruct_batched
from deepleak.attacks.parts.distance import L2, Cosine
from deepleak.attacks.parts.prior import L2Norm, TotalVariation
from deepleak.attacks.engine.image_gradient import FiniteDifference
from deepleak.attacks.parts.scheduler import step_decay
from deepleak.errors import DeepleakError
from deepleak.models import LeNet, ResNet18
from deepleak.scenarios import FedSGD, PrivateBatch


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # exact comparison: no sign of a gradient flips on rounding
    yield
    torch.set_default_dtype(previous)


def observe(model: torch.nn.Module, k: int, pixels: int = 16, bn_mode: str = "train"):
    # Not the attack's seeds: a restart drawn from the same generator would start at the truth.
    generator = torch.Generator().manual_seed(12345)
    images = torch.rand(k, 3, pixels, pixels, generator=generator)
    labels = torch.arange(k) % 10
    return FedSGD(bn_mode=bn_mode).observe(model, PrivateBatch(images, labels), 10), labels


def ig(iterations: int, restarts: int, **kw) -> GradientMatching:
    settings = dict(priors={"tv": TotalVariation(1e-4)}, scheduler=functools.partial(step_decay, gamma=0.1),
                    signed=True, box=True)
    settings.update(kw)
    return GradientMatching(Cosine(), functools.partial(torch.optim.Adam, lr=0.1), iterations=iterations,
                             restarts=restarts, **settings)


def assert_same(sequential, batched):
    torch.testing.assert_close(batched.images, sequential.images, rtol=0, atol=1e-9)
    assert batched.restart_distances == pytest.approx(sequential.restart_distances, rel=1e-9)
    assert batched.best_restart == sequential.best_restart
    assert batched.history == pytest.approx(sequential.history, rel=1e-9)
    assert (batched.iterations, batched.evaluations) == (sequential.iterations, sequential.evaluations)
    assert batched.nonfinite_restarts == sequential.nonfinite_restarts


def test_batched_restarts_equal_sequential_ones_on_lenet(float64):
    torch.manual_seed(0)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=2)
    attack = ig(iterations=6, restarts=3)
    sequential = attack.reconstruct(observation, labels, seed=3)
    batched = reconstruct_batched(attack, observation, labels, seed=3)
    assert_same(sequential, batched)
    assert len(set(batched.restart_distances)) == 3  # three different starts, really


def test_batched_restarts_with_l2_and_plain_gradients(float64):
    torch.manual_seed(1)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=2)
    # L2Norm has no closed form: it is differentiated under vmap with the distance.
    attack = GradientMatching(L2(), functools.partial(torch.optim.SGD, lr=10.0), iterations=4, restarts=2, box=False,
                               priors={"l2": L2Norm(1e-3)})
    assert_same(attack.reconstruct(observation, labels, seed=0), reconstruct_batched(attack, observation, labels, seed=0))


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_batch_norm_runs_on_each_restarts_own_batch(float64, bn_mode):
    torch.manual_seed(2)
    model = ResNet18(10, (3, 8, 8), width=4, activation_fn="sigmoid")
    observation, labels = observe(model, k=2, pixels=8, bn_mode=bn_mode)
    running = [b.clone() for b in observation.model.buffers()]
    attack = ig(iterations=2, restarts=2)
    assert_same(attack.reconstruct(observation, labels, seed=0), reconstruct_batched(attack, observation, labels, seed=0))
    # The server's model is untouched (the attacker works on a copy).
    assert all(torch.equal(a, b) for a, b in zip(running, observation.model.buffers()))


def test_fast_convolutions_of_the_attackers_model_do_not_change_batched_results(float64, monkeypatch):
    """Once GradientMatching.prepare applies step.fast_double_backward, the batched path
    (torch.func transforms) falls back to the native convolution and still agrees."""
    from deepleak.attacks.engine.step import fast_double_backward

    torch.manual_seed(2)
    model = ResNet18(10, (3, 8, 8), width=4, activation_fn="sigmoid")
    observation, labels = observe(model, k=2, pixels=8)
    attack = ig(iterations=2, restarts=2)
    sequential = attack.reconstruct(observation, labels, seed=0)
    prepare = attack.prepare
    monkeypatch.setattr(attack, "prepare", lambda obs: (fast_double_backward(prepare(obs)[0], min_channels=1),
                                                        *prepare(obs)[1:]))
    assert_same(sequential, reconstruct_batched(attack, observation, labels, seed=0))
    assert_same(sequential, attack.reconstruct(observation, labels, seed=0))


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_finite_difference_restarts_equal_sequential_ones(float64, scheme):
    """The batched finite-difference route: the same calibrated step, and the same images
    as the sequential route (the difference quotient amplifies rounding, so distances agree
    to 1e-12 rather than 1e-9 of the exact route's test)."""
    torch.manual_seed(0)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=2)
    # TV takes its closed form over all restarts at once, L2 (no closed form) runs under vmap.
    priors = {"tv": TotalVariation(1e-4), "l2": L2Norm(1e-3)}
    attack = ig(iterations=6, restarts=3, image_gradient=FiniteDifference(scheme), priors=priors)
    sequential = attack.reconstruct(observation, labels, seed=3)
    batched = reconstruct_batched(attack, observation, labels, seed=3)
    torch.testing.assert_close(batched.images, sequential.images, rtol=0, atol=1e-9)
    assert batched.restart_distances == pytest.approx(sequential.restart_distances, rel=1e-12)
    assert batched.history == pytest.approx(sequential.history, rel=1e-12)
    assert batched.best_restart == sequential.best_restart
    assert (batched.iterations, batched.evaluations) == (sequential.iterations, sequential.evaluations)
    assert batched.extras["image_gradient_step"] == sequential.extras["image_gradient_step"] is not None
    assert batched.extras["image_gradient_agreement"] == pytest.approx(sequential.extras["image_gradient_agreement"])
    assert batched.extras["image_gradient_agreement"] > 0.999
    # The route really is the difference quotient: close to the double backward's gradient, not equal.
    model, target, _ = attack.prepare(observation)
    images = torch.rand(3, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    approximate = BatchedFiniteDifference(model, target, attack.distance, attack.priors, attack.image_gradient)(images, labels)
    exact = BatchedObjective(model, target, attack.distance, attack.priors)(images, labels)
    torch.testing.assert_close(approximate[1:], exact[1:], rtol=1e-12, atol=0)  # totals, distances
    cosine = torch.nn.functional.cosine_similarity(approximate[0].flatten(1), exact[0].flatten(1), dim=1)
    assert bool((cosine > 0.99999).all()) and not torch.equal(approximate[0], exact[0]), cosine


def test_finite_difference_restarts_on_batch_norm(float64):
    torch.manual_seed(2)
    model = ResNet18(10, (3, 8, 8), width=4, activation_fn="sigmoid")
    observation, labels = observe(model, k=2, pixels=8)
    attack = ig(iterations=3, restarts=2, image_gradient=FiniteDifference())
    sequential = attack.reconstruct(observation, labels, seed=0)
    batched = reconstruct_batched(attack, observation, labels, seed=0)
    torch.testing.assert_close(batched.images, sequential.images, rtol=0, atol=1e-9)
    assert batched.restart_distances == pytest.approx(sequential.restart_distances, rel=1e-12)


def test_finite_difference_restarts_refuse_kinks():
    torch.manual_seed(0)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8, activation_fn="relu"), k=1)
    attack = ig(iterations=1, restarts=2, image_gradient=FiniteDifference())
    with pytest.raises(DeepleakError, match="smooth victim.*batched_restarts=false"):
        reconstruct_batched(attack, observation, labels)
    assert attack.reconstruct(observation, labels).iterations == 2  # sequentially its kinks are frozen


def test_diverging_restarts_are_frozen_like_sequential_ones(float64):
    torch.manual_seed(0)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=1)
    attack = GradientMatching(L2(), functools.partial(torch.optim.SGD, lr=math.inf), iterations=5, restarts=2, box=False)
    sequential = attack.reconstruct(observation, labels, seed=0)
    batched = reconstruct_batched(attack, observation, labels, seed=0)
    assert batched.nonfinite_restarts == sequential.nonfinite_restarts == 2
    assert bool(torch.isfinite(batched.images).all())
    assert_same(sequential, batched)


def test_refusals_are_one_clear_error():
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=1)
    lbfgs = GradientMatching(L2(), functools.partial(torch.optim.LBFGS, lr=1.0), iterations=1, restarts=2)
    with pytest.raises(DeepleakError, match="L-BFGS"):
        reconstruct_batched(lbfgs, observation, labels)

    class ReadsActivations:
        def attach(self, model):
            return None

        def detach(self):
            pass

        def __call__(self, images):
            return images.sum()

    attack = ig(iterations=1, restarts=2, priors={"bn": ReadsActivations()})
    with pytest.raises(DeepleakError, match="bn prior"):
        reconstruct_batched(attack, observation, labels)

    class OwnObjective(GradientMatching):
        def matching_distance(self, model, images, labels, target):
            return super().matching_distance(model, images, labels, target) * 2

    own = OwnObjective(L2(), functools.partial(torch.optim.Adam, lr=0.1), iterations=1, restarts=2)
    with pytest.raises(DeepleakError, match="overrides matching_distance"):
        reconstruct_batched(own, observation, labels)


def test_finite_difference_restarts_without_a_closed_form_direction(float64):
    """A distance with only a functional form: dD/dg by autograd under vmap, the same
    objective as the closed form of the built-in distances."""

    class FunctionalOnly:
        def __init__(self, distance):
            self.functional = distance.functional

    torch.manual_seed(0)
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=2)
    attack = ig(iterations=2, restarts=3, image_gradient=FiniteDifference())
    model, target, _ = attack.prepare(observation)
    attack.image_gradient.current_step = 1e-6
    images = torch.rand(3, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    closed = BatchedFiniteDifference(model, target, Cosine(), attack.priors, attack.image_gradient)
    plain = BatchedFiniteDifference(model, target, FunctionalOnly(Cosine()), attack.priors, attack.image_gradient)
    assert closed._direction != plain._direction  # the two routes to dD/dg really differ
    for a, b in zip(closed(images, labels), plain(images, labels)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_one_cpu_thread_is_told_that_batching_gains_little(caplog, monkeypatch):
    observation, labels = observe(LeNet(10, (3, 16, 16), width=8), k=2)
    attack = ig(iterations=1, restarts=2)
    for threads, told in ((1, True), (2, False)):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        caplog.clear()
        with caplog.at_level("INFO", logger="deepleak.attacks.engine.batched_restarts"):
            reconstruct_batched(attack, observation, labels, seed=0)
        assert ("batched restarts on one CPU thread" in caplog.text) is told, threads
