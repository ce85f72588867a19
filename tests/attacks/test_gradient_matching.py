"""Image reconstruction on tiny real cases, with real PSNR bars: each >= 10 dB above its
case's noise floor (crafted.noise_floor_psnr: the better of uniform noise and the sample
set's mean image against the same private image)."""

import functools
import math

import torch
import pytest

from deepleak.attacks import GradientMatching
from deepleak.attacks.parts.distance import L2, Cosine
from deepleak.attacks.parts.prior import TotalVariation
from deepleak.attacks.parts.scheduler import step_decay
from deepleak.errors import DeepleakError
from deepleak.labels import ZeroShot
from deepleak.metrics import psnr

from crafted import lbfgs, noise_floor_psnr, observe


def test_batch_of_one_is_recovered_above_30_db():
    """Measured 40.0 dB; the floor is 10.6 dB (the sample set's mean image; noise 7.0 dB)."""
    observation, images, labels = observe(1)
    restored = ZeroShot().restore(observation)
    assert restored.tolist() == labels.tolist()
    result = lbfgs(60).reconstruct(observation, restored)
    assert noise_floor_psnr(images) + 10 <= 30
    assert psnr(result.images, images)[0] > 30
    assert result.gradient_distance < 1e-3
    assert result.iterations == 60 and result.evaluations > 60


def test_attack_never_sees_the_private_batch():
    observation, _, _ = observe(1)
    assert not hasattr(observation, "images") and not hasattr(observation, "labels")


def test_restarts_keep_the_smallest_gradient_distance():
    observation, _, labels = observe(1)
    result = lbfgs(2, restarts=3).reconstruct(observation, labels)
    assert len(result.restart_distances) == 3
    assert result.gradient_distance == min(result.restart_distances)
    assert result.best_restart == result.restart_distances.index(min(result.restart_distances))


def test_divergence_is_caught_and_flagged():
    observation, _, labels = observe(1)
    attack = GradientMatching(L2(), functools.partial(torch.optim.SGD, lr=1e38), iterations=5, box=False)
    result = attack.reconstruct(observation, labels)
    assert result.nonfinite_restarts == 1
    assert torch.isfinite(result.images).all()


def test_ig_recipe_runs_with_signed_adam_and_step_decay():
    """At 16 px: cosine matching discards the gradient's scale and is far weaker than L2 on
    DLG's LeNet; 400 steps reach 28.5 dB at 16 px (at 32 px only 11.5 dB, 0.9 dB above that
    image's floor). The floor here is 11.0 dB (the sample set's mean image; noise 7.0 dB)."""
    observation, images, labels = observe(1, resolution=16)
    attack = GradientMatching(
        Cosine(), functools.partial(torch.optim.Adam, lr=0.01), priors={"tv": TotalVariation(1e-4)},
        scheduler=step_decay, iterations=400, signed=True, box=True,
    )
    result = attack.reconstruct(observation, labels)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert result.gradient_distance < 1e-3
    assert noise_floor_psnr(images) + 10 <= 22
    assert psnr(result.images, images)[0] > 22


def test_budget_stops_cleanly():
    observation, _, labels = observe(1)
    result = lbfgs(10_000, budget_s=1.0).reconstruct(observation, labels)
    assert result.stopped_by_budget and result.seconds < 3
    assert math.isfinite(result.gradient_distance)


def test_bad_settings_are_user_errors():
    with pytest.raises(DeepleakError):
        lbfgs(0)
