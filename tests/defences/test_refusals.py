"""Every parameter and model a defence cannot work with is refused with one sentence that
names the config key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepleak.defences import (
    DPSGD,
    ClientContext,
    Clip,
    Noise,
    Prune,
    Quantize,
    SecAgg,
    Soteria,
)
from deepleak.errors import DeepleakError


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Prune(ratio=1.0), r"defence\.ratio must be in \[0, 1\), got 1\.0"),
        (lambda: Prune(ratio=-0.1), r"defence\.ratio must be in \[0, 1\), got -0\.1"),
        (lambda: Soteria(ratio=1.5), r"defence\.ratio must be in \[0, 1\)"),
        (lambda: Quantize(bits=0), r"defence\.bits must be an integer in 1\.\.32, got 0"),
        (lambda: Quantize(bits=33), r"defence\.bits must be an integer in 1\.\.32, got 33"),
        (lambda: Quantize(bits=8.5), r"defence\.bits must be an integer"),
        (lambda: Quantize(bits=True), r"defence\.bits must be an integer"),
        (lambda: Quantize(stochastic="yes"), r"defence\.stochastic must be true or false"),
        (lambda: Noise(std=-1), r"defence\.std must be >= 0, got -1"),
        (lambda: Noise(std=float("nan")), r"defence\.std must be a finite number"),
        (lambda: Noise(distribution="uniform"), r"defence\.distribution must be one of gaussian, laplace, got 'uniform'"),
        (lambda: Clip(max_norm=0), r"defence\.max_norm must be > 0, got 0"),
        (lambda: Clip(max_norm="1"), r"defence\.max_norm must be a finite number"),
        (lambda: DPSGD(noise_multiplier=-0.5), r"defence\.noise_multiplier must be >= 0, got -0\.5"),
        (lambda: DPSGD(max_norm=-1.0), r"defence\.max_norm must be > 0"),
        (lambda: DPSGD(delta=0.0), r"defence\.delta must be in \(0, 1\), got 0\.0"),
        (lambda: DPSGD(delta=1.0), r"defence\.delta must be in \(0, 1\)"),
        (lambda: DPSGD(accountant="gdp"), r"defence\.accountant must be one of rdp, prv, got 'gdp'"),
        (lambda: SecAgg(clients=0), r"defence\.clients must be >= 1, got 0"),
        (lambda: SecAgg(clients=1.5), r"defence\.clients must be an integer"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key(build, message):
    with pytest.raises(DeepleakError, match=message):
        build()


def test_soteria_refuses_a_model_that_does_not_end_in_linear():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    expected = r"defence=soteria needs a model whose last layer is nn\.Linear; Sequential ends in Conv2d"
    with pytest.raises(DeepleakError, match=expected):
        Soteria().check_model(model, "eval")
    context = ClientContext(model, torch.rand(1, 1, 4, 4), torch.tensor([0]))
    with pytest.raises(DeepleakError, match=expected):
        Soteria().defend(tuple(torch.zeros_like(p) for p in model.parameters()), context, torch.Generator())
    Soteria().check_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), "train")  # accepted


def test_soteria_refuses_an_update_that_does_not_match_the_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    context = ClientContext(model, torch.rand(1, 1, 2, 2), torch.tensor([0]))
    with pytest.raises(DeepleakError, match="order and shapes of the model's parameters"):
        Soteria().defend((torch.zeros(2, 4),), context, torch.Generator())


def test_dp_sgd_refuses_batch_norm_in_train_mode_only():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with pytest.raises(DeepleakError, match=r"defence=dp_sgd needs per-sample gradients.*scenario\.bn_mode=eval"):
        DPSGD().check_model(model, "train")
    DPSGD().check_model(model, "eval")
    DPSGD().check_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "train")
    images, labels = torch.rand(2, 3, 6, 6), torch.tensor([0, 1])
    model.train()  # the gradient itself refuses a batch-norm layer in train mode too
    with pytest.raises(DeepleakError, match="defence=dp_sgd needs per-sample gradients"):
        DPSGD().gradient(model, images, labels, torch.Generator())
    model.eval()
    assert len(DPSGD().gradient(model, images, labels, torch.Generator())) == 6


def test_dp_sgd_accounting_refuses_bad_steps_and_rates():
    with pytest.raises(DeepleakError, match="steps"):
        DPSGD().epsilon(-1, 0.1)
    with pytest.raises(DeepleakError, match="sample rate"):
        DPSGD().epsilon(10, 0.0)
    with pytest.raises(DeepleakError, match="sample rate"):
        DPSGD().epsilon(10, 1.5)
