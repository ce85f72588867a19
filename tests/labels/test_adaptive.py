"""deepleak's default label method (``labels=adaptive``): each route on a case built to take it,
with the labels it must give there."""

import dataclasses

import pytest
import torch
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.labels import Adaptive, FeatureFit, ZeroShot, ZeroShotPlus
from deepleak.metrics import flat_guess, label_accuracy
from deepleak.models import build_model

from crafted import LENET_CFG, MLP_CFG, closed_form_observation, confident_head, labels_of, observation_from, tiny_fedavg


def test_a_confident_head_below_the_classes_is_searched_to_its_exact_labels():
    """The crafted trained-like victim (test_feature_fit): zeroshot_plus and zeroshot miss, so the
    restarts' labels are not agreed and the search runs from them and keeps them (the true
    multiset fits to ~1e-9; no single move scores below 0.9x that)."""
    labels = [1, 1, 1, 4, 8, 8]
    observation, _ = confident_head(labels)
    restored, route = Adaptive(search=60).restore_routed(observation)
    assert route == "feature_fit_search" and labels_of(restored) == labels
    assert labels_of(ZeroShot().restore(observation)) != labels
    assert labels_of(ZeroShotPlus().restore(observation)) == [1, 3, 5, 6, 7, 8]


@pytest.mark.parametrize("labels", [[0, 3, 3, 9], [0, 1, 2, 5, 5, 6, 7]])
def test_untrained_lenet_takes_the_agreed_restarts_without_a_search(labels):
    """Untrained DLG LeNet-12, closed-form gradient: feature_fit's restarts and zeroshot_plus give
    the same multiset (the true one), so no candidate is scored."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    observation = closed_form_observation(model, labels, 10)
    method = Adaptive()
    method.fit._search = lambda *a, **k: pytest.fail("the search ran on agreed labels")
    restored, route = method.restore_routed(observation)
    assert route == "feature_fit_agreed" and labels_of(restored) == labels
    method.agree = False  # always search: the same labels, from the search
    method.fit._search = lambda labels, *a, **k: [labels.count(c) for c in range(10)]
    restored, route = method.restore_routed(observation)
    assert route == "feature_fit_search" and labels_of(restored) == labels


def test_a_search_round_larger_than_its_cap_keeps_the_restarts():
    """K (classes - 1) = 6 x 9 = 54 single moves > search=50: no partial round, the restarts' labels."""
    labels = [1, 1, 1, 4, 8, 8]
    observation, _ = confident_head(labels)
    restored, route = Adaptive(search=50).restore_routed(observation)
    assert route == "feature_fit" and labels_of(restored) == labels_of(FeatureFit().restore(observation)) == labels


def test_zeroshot_plus_weight_falls_with_confidence_over_missed_mass():
    """w = 1 / (1 + (|c| / (0.3 m))^2): half at c = 0.3 m; a victim that is confident and misses
    little of the batch (c = 0.12, m = 0.02, a trained victim's batch that reads a low confidence)
    keeps almost none; an unconfident one with the same small m (an untrained victim with
    near-uniform outputs) keeps it all."""
    method = Adaptive()  # shrink 0.3, sharpness 2, mass_power 1
    assert [method.weight(c, 0.5) for c in (None, 0.0, 0.15, -0.15, 0.3)] == [1.0, 1.0, 0.5, 0.5, 0.2]
    assert method.weight(0.12, 0.02) == pytest.approx(1 / 401) and method.weight(0.0, 0.02) == 1.0
    assert method.weight(0.3, 0.0) == 0.0 and method.weight(None, None) == 1.0
    assert Adaptive(mass_power=0).weight(0.3, 0.0) == 0.5  # c alone: half at c = shrink
    assert Adaptive(sharpness=4).weight(0.3, 0.5) == 1 / 17
    assert Adaptive(shrink=0).weight(0.9, 0.01) == 1.0


def test_classes_with_a_negative_weight_gradient_row_are_present():
    """Untrained DLG LeNet-12 (sigmoid features > 0), closed-form gradient of [0, 3, 3, 9]: a class
    without samples has a non-negative row, so exactly 0, 3 and 9 read present; the flat guess
    keeps to them only where they are at most half of the classes."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    present = Adaptive.present_classes(closed_form_observation(model, [0, 3, 3, 9], 10))
    assert present.tolist() == [c in (0, 3, 9) for c in range(10)]
    assert Adaptive().flat_support(present) is present
    assert Adaptive(present_share=0.2).flat_support(present) is None
    assert Adaptive(present_share=0).flat_support(present) is None
    assert Adaptive().flat_support(torch.tensor([True] * 6 + [False] * 4)) is None


def test_missed_mass_is_the_share_of_labels_the_softmax_puts_elsewhere():
    """K = 8: the softmax mass has 2 units on class 1 that belong to class 0 and 1 on class 3 that
    belongs to class 2: 3 of 8 labels missed."""
    assert Adaptive.missed_mass(torch.tensor([2.0, -2.0, 1.0, -1.0, 0.0]), 8) == 3 / 8


def test_a_confident_victim_at_least_as_large_as_the_classes_is_shrunk_to_the_flat_guess():
    """K = 16 over 10 classes on the crafted confident head (softmax >= 0.92 on every sample):
    feature_fit cannot separate the features; the class-embedding confidence is 0.567 and the
    softmax misses 0.018 of the labels, so zeroshot_plus's counts (12 of 16 right) keep a weight
    of 1e-4 and the answer has the flat guess's shape (7 classes read present, more than half:
    the plain flat guess), one label of each class and two of six,
    13 of 16 right as the flat guess's own order; without the shrinkage it is zeroshot_plus's."""
    labels = [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9, 9, 9]
    observation, softmax = confident_head(labels, norm=1.0, seed=1)
    assert float(softmax.max(1).values.min()) > 0.9
    method = Adaptive()
    missed = Adaptive.missed_mass(Adaptive.counts_less_mass(observation), 16)
    assert missed == pytest.approx(0.018, abs=0.001)
    assert method.weight(Adaptive.confidence(observation), missed) == pytest.approx(9.3e-5, rel=0.01)
    restored, route = method.restore_routed(observation)
    assert route == "zeroshot_plus_shrunk" and labels_of(restored) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 9]
    assert label_accuracy(restored, labels, 10) == label_accuracy(flat_guess(16, 10), labels, 10) == 13 / 16
    plain = ZeroShotPlus().restore(observation)
    assert label_accuracy(plain, labels, 10) == 12 / 16
    assert labels_of(Adaptive(shrink=0).restore(observation)) == labels_of(plain)


def test_a_confident_victim_s_two_class_batch_keeps_to_the_classes_shown_present():
    """K = 16, eight samples each of classes 2 and 7, on the crafted confident head: c = 0.12 and
    m = 0.02 leave zeroshot_plus (4 of 16 right) a weight of 0.0025; the weight gradient shows
    exactly 2 and 7 present, 2 of 10 classes, so the flat guess is 8 and 8: every label right,
    where the flat guess over every class (its units placed by the counts-less-mass) gets 4."""
    labels = [2] * 8 + [7] * 8
    observation, softmax = confident_head(labels, norm=1.0, seed=1)
    assert float(softmax.max(1).values.min()) > 0.9
    assert Adaptive.present_classes(observation).tolist() == [c in (2, 7) for c in range(10)]
    restored, route = Adaptive().restore_routed(observation)
    assert route == "zeroshot_plus_shrunk_present" and labels_of(restored) == labels
    assert label_accuracy(ZeroShotPlus().restore(observation), labels, 10) == 4 / 16
    assert label_accuracy(Adaptive(present_share=0).restore(observation), labels, 10) == 4 / 16


def test_an_untrained_victim_with_near_uniform_outputs_keeps_zeroshot_plus():
    """An untrained DLG MLP (sigmoid, 1024 hidden) at K = 64 over 10 classes: its softmax is
    nearly input-independent, so it misses only the batch's sampling noise (m < 0.3, as a
    trained victim's batch can), but its class embeddings read no confidence and zeroshot_plus,
    exact here, keeps its weight: every label right, where the flat guess gets 54 of 64."""
    labels = [c for c, count in enumerate([3, 4, 5, 6, 7, 8, 9, 10, 6, 6]) for _ in range(count)]
    model = build_model(MLP_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    observation = closed_form_observation(model, labels, 10)
    confidence = Adaptive.confidence(observation)
    missed = Adaptive.missed_mass(Adaptive.counts_less_mass(observation), 64)
    assert missed < 0.3 and abs(confidence) < 0.01 and Adaptive().weight(confidence, missed) > 0.99
    restored = Adaptive().restore(observation)
    assert label_accuracy(restored, labels, 10) == 1.0 and label_accuracy(flat_guess(64, 10), labels, 10) < 0.9


def test_an_untrained_victim_at_least_as_large_as_the_classes_gets_zeroshot_plus():
    labels = [0, 0, 1, 2, 3, 3, 3, 5, 6, 7, 8, 9]
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    observation = closed_form_observation(model, labels, 10)
    assert abs(Adaptive.confidence(observation)) < 0.03  # weight > 0.96: nearly zeroshot_plus's counts
    restored, route = Adaptive().restore_routed(observation)
    assert route == "zeroshot_plus_shrunk" and labels_of(restored) == labels_of(ZeroShotPlus().restore(observation))


def test_without_a_bias_the_counts_are_zeroshot_plus():
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    gradient = closed_form_observation(model, [0, 3, 3, 9], 10).gradient[-2]
    model.fc = nn.Linear(768, 10, bias=False)
    observation = observation_from(model, gradient, torch.zeros(10), 4, 10)
    assert Adaptive.confidence(observation) is None
    restored, route = Adaptive().restore_routed(observation)
    assert route == "zeroshot_plus" and labels_of(restored) == labels_of(ZeroShotPlus().restore(observation))


def test_a_declared_defence_or_a_fedavg_update_gets_zeroshot_plus():
    """The server knows the client prunes its update, or the update is several local steps:
    feature_fit's exact identities do not hold, and the answer is zeroshot_plus's, without a fit."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    observation = dataclasses.replace(closed_form_observation(model, [0, 3, 3, 9], 10),
                                      defence={"name": "prune", "ratio": 0.9})
    method = Adaptive()
    method.fit.counts_with_route = lambda *a, **k: pytest.fail("feature_fit ran under a defence")
    restored, route = method.restore_routed(observation)
    assert route == "zeroshot_plus" and labels_of(restored) == labels_of(ZeroShotPlus().restore(observation))
    clean = dataclasses.replace(observation, defence={"name": "none"})
    fedavg = tiny_fedavg()[1]
    assert fedavg.gradient is None and method.restore_routed(fedavg)[1] == "zeroshot_plus"
    imported = dataclasses.replace(clean, scenario="imported")  # an imported gradient is one: the fit runs
    with pytest.raises(pytest.fail.Exception, match="feature_fit ran"):
        method.restore_routed(imported)


@pytest.mark.parametrize("settings, match", [
    ({"search": -1}, "labels.search, labels.shrink, labels.mass_power and labels.residual must be >= 0"),
    ({"shrink": -0.3}, r"labels.present_share in \[0, 1\], got 200, -0.3, 1.0, 0.1, 2.0 and 0.5"),
    ({"mass_power": -1}, "got 200, 0.3, -1, 0.1, 2.0 and 0.5"),
    ({"sharpness": 0}, "labels.sharpness > 0 .*, got 200, 0.3, 1.0, 0.1, 0 and 0.5"),
    ({"present_share": 1.5}, "got 200, 0.3, 1.0, 0.1, 2.0 and 1.5"),
    ({"residual": -0.1}, "got 200, 0.3, 1.0, -0.1, 2.0 and 0.5")])
def test_bad_settings_are_refused(settings, match):
    with pytest.raises(DeepleakError, match=match):
        Adaptive(**settings)
