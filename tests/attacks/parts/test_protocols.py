"""The parts' optional capabilities are declared Protocols, and the engine routes by them."""

import torch

from deepleak.attacks.parts.distance import L2, Cosine
from deepleak.attacks.parts.prior import BatchNormStatistics, L2Norm, TotalVariation, group_priors
from deepleak.attacks.parts.protocols import (
    ClosedFormPrior, DirectionalDistance, FunctionalDistance, ModelPrior, RestartDirectionalDistance,
)


def test_the_built_in_parts_declare_their_capabilities():
    for distance in (L2(), Cosine()):
        assert isinstance(distance, FunctionalDistance)
        assert isinstance(distance, DirectionalDistance)
        assert isinstance(distance, RestartDirectionalDistance)
    assert isinstance(TotalVariation(), ClosedFormPrior) and not isinstance(TotalVariation(), ModelPrior)
    assert isinstance(BatchNormStatistics(), ModelPrior) and not isinstance(BatchNormStatistics(), ClosedFormPrior)
    assert not isinstance(L2Norm(), (ClosedFormPrior, ModelPrior))
    assert not isinstance(lambda c, t: sum(((a - b) ** 2).sum() for a, b in zip(c, t)), DirectionalDistance)


def test_priors_are_grouped_once_in_order():
    class Both(TotalVariation):  # a closed form that also reads the model counts as reading it
        def attach(self, model):
            return None

        def detach(self):
            pass

    priors = {"l2": L2Norm(), "tv": TotalVariation(), "bn": BatchNormStatistics(), "both": Both(), "plain": torch.sum}
    groups = group_priors(priors)
    assert list(groups.reads_model) == ["bn", "both"]
    assert list(groups.closed_form) == ["tv"]
    assert list(groups.of_images) == ["l2", "plain"]
