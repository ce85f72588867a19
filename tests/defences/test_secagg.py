"""Secure aggregation's weighted mean, against hand-computed means and breaching's error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepleak.defences import ClientContext, SecAgg, weighted_mean
from deepleak.errors import DeepleakError


def test_weighted_mean_weights_by_examples():
    (mean,) = weighted_mean([[torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 6.0])]], [1, 3])
    assert torch.equal(mean, torch.tensor([2.5, 5.0]))  # (1*[1,2] + 3*[3,6]) / 4


def test_equal_weights_give_the_plain_mean_per_tensor():
    torch.manual_seed(0)
    updates = [[torch.randn(3, 2), torch.randn(4, dtype=torch.float64)] for _ in range(3)]
    means = weighted_mean(updates, [5, 5, 5])
    for i, mean in enumerate(means):
        assert mean.dtype == updates[0][i].dtype and mean.shape == updates[0][i].shape
        assert torch.allclose(mean, torch.stack([u[i] for u in updates]).mean(dim=0), rtol=0, atol=1e-6)


def test_breachings_running_mean_is_not_the_mean():
    g1, g2 = torch.tensor([4.0, 8.0]), torch.tensor([2.0, -2.0])
    running = torch.zeros(2)
    for g in (g1, g2):  # breaching: agg += (g - agg) / n with n the number of users, not the count so far
        running += (g - running) / 2
    assert torch.equal(running, g1 / 4 + g2 / 2)  # [2.0, 1.0]
    (ours,) = weighted_mean([[g1], [g2]], [1, 1])
    assert torch.equal(ours, torch.tensor([3.0, 3.0]))
    assert not torch.equal(ours, running)


def test_weighted_mean_leaves_inputs_alone_and_refuses_bad_calls():
    a, b = [torch.tensor([1.0])], [torch.tensor([3.0])]
    weighted_mean([a, b], [1, 1])
    assert torch.equal(a[0], torch.tensor([1.0])) and torch.equal(b[0], torch.tensor([3.0]))
    with pytest.raises(DeepleakError, match="weights"):
        weighted_mean([a, b], [1])
    with pytest.raises(DeepleakError, match="weights"):
        weighted_mean([a, b], [0, 0])
    with pytest.raises(DeepleakError, match="numbers of tensors"):
        weighted_mean([a, [torch.tensor([1.0]), torch.tensor([2.0])]], [1, 1])
    with pytest.raises(DeepleakError, match="at least one"):
        weighted_mean([], [])


def test_secagg_defence_is_the_identity_on_one_client():
    defence = SecAgg(clients=3)
    assert defence.public() == {"name": "secagg", "clients": 3}
    update = (torch.tensor([1.0, 2.0]),)
    context = ClientContext(nn.Linear(2, 1), torch.rand(1, 2), torch.tensor([0]))
    out = defence.defend(update, context, torch.Generator().manual_seed(0))
    assert out[0] is update[0]
