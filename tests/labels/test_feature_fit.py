"""deepleak's label method for trained victims (``labels=feature_fit``): exact on a crafted
confident linear head where the dummy-based methods miss, exact on untrained LeNet, and its
refusals."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.labels import FeatureFit, ZeroShotPlus
from deepleak.models import build_model

from crafted import LENET_CFG, closed_form_observation, confident_head, labels_of, observation_from


@pytest.mark.parametrize("labels, zeroshot_plus", [
    pytest.param([2, 2, 5, 7], [2, 3, 5, 7], marks=pytest.mark.slow),  # 20 s here; the other case ~10 s
    ([1, 1, 1, 4, 8, 8], [1, 3, 5, 6, 7, 8]),
])
def test_exact_on_a_confident_head_where_zeroshot_plus_misses(labels, zeroshot_plus):
    """Measured: feature_fit's real-valued counts within 1e-3 of the truth; zeroshot_plus's
    dummies (whose softmax is not the batch's) give the labels listed, 1 and 3 wrong."""
    observation, softmax = confident_head(labels)
    assert float(softmax.max(1).values.min()) > 0.75  # the head is confident on every sample
    counts = FeatureFit().counts(observation)
    truth = torch.bincount(torch.tensor(labels), minlength=10).double()
    torch.testing.assert_close(counts, truth, rtol=0, atol=1e-3)
    assert labels_of(FeatureFit().restore(observation)) == labels
    assert labels_of(ZeroShotPlus().restore(observation)) == zeroshot_plus


@pytest.mark.parametrize("labels, zeroshot_plus", [
    ([0, 3, 3, 9], [0, 3, 3, 9]),
    ([4, 4, 4, 4, 4], [4, 4, 4, 4, 4]),
    ([0, 1, 2, 5, 5, 6, 7, 8], [0, 1, 2, 5, 5, 6, 6, 7]),
])
def test_exact_on_untrained_lenet(labels, zeroshot_plus):
    """Untrained DLG LeNet-12, closed-form gradient on random inputs, two starts: the true
    labels; zeroshot_plus (measured) misses one of the eight."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    torch.manual_seed(0)
    observation = closed_form_observation(model, labels, 10)
    assert labels_of(FeatureFit(restarts=2).restore(observation)) == labels
    assert labels_of(ZeroShotPlus().restore(observation)) == zeroshot_plus


def test_repeated_image_falls_back_to_zeroshot_plus():
    """Four copies of one image: the weight gradient has rank 1 < K, the features cannot be
    separated, and the counts are zeroshot_plus's."""
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    with torch.no_grad():
        features = model.body(torch.rand(1, 3, 32, 32)).repeat(4, 1)
        softmax = torch.softmax(model.fc(features), dim=1)
    residual = softmax - F.one_hot(torch.tensor([6, 6, 6, 6]), 10).float()
    observation = observation_from(model, residual.T @ features / 4, residual.mean(0), 4, 10)
    torch.testing.assert_close(FeatureFit().counts(observation), ZeroShotPlus().counts(observation), rtol=0, atol=0)


def test_refuses_a_classifier_without_bias():
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    model.fc = nn.Linear(768, 10, bias=False)
    observation = closed_form_observation(build_model(LENET_CFG, 10, (3, 32, 32), seed=0), [1, 2], 10)
    observation = observation_from(model, observation.gradient[-2], torch.zeros(10), 2, 10)
    with pytest.raises(DeepleakError, match="^the feature_fit label method needs a bias in the classifier layer"):
        FeatureFit().restore(observation)


def test_refuses_a_batch_as_large_as_the_classes():
    model = build_model(LENET_CFG, 4, (3, 32, 32), seed=0)
    observation = closed_form_observation(model, [0, 1, 2, 3], 4)
    with pytest.raises(DeepleakError, match=r"at most num_classes - 1 = 3, got batch_size=4; use labels=zeroshot_plus$"):
        FeatureFit().restore(observation)


def test_refuses_an_unbounded_activation():
    model = build_model({**LENET_CFG, "activation_fn": "gelu"}, 10, (3, 32, 32), seed=0)
    observation = closed_form_observation(model, [1, 2], 10)
    with pytest.raises(DeepleakError, match="needs a sigmoid, ReLU or tanh before the classifier.*found gelu"):
        FeatureFit().restore(observation)


def test_rejects_bad_settings():
    with pytest.raises(DeepleakError, match="must be >= 1"):
        FeatureFit(restarts=0)


def multiset_distance(labels, target):
    """Labels of ``labels`` not matched in ``target`` (multisets)."""
    rest = list(target)
    missing = 0
    for label in labels:
        if label in rest:
            rest.remove(label)
        else:
            missing += 1
    return missing


def test_search_walks_single_moves_to_the_lowest_score_and_respects_its_cap():
    """The multiset search on a crafted score (1e-6 x 10^(labels off the target)): from two
    labels off it reaches the target's counts exactly; with a cap of 5 scored candidates it
    stops after them, one move short."""
    target, start = [1, 1, 4, 8], [1, 4, 4, 7]
    calls = []

    def score(labels):
        calls.append(list(labels))
        return 1e-6 * 10.0 ** multiset_distance(labels, target)

    counts = FeatureFit(search=500)._search(start, score, 10)
    assert counts == [0, 2, 0, 0, 1, 0, 0, 0, 1, 0]
    assert calls[0] == sorted(start) and len(calls) <= 500
    calls.clear()
    capped = FeatureFit(search=5)._search(start, score, 10)
    assert len(calls) == 5 and capped == [0, 1, 0, 0, 2, 0, 0, 1, 0, 0]  # no full round: the start's counts


def test_search_settings_are_checked():
    with pytest.raises(DeepleakError, match="labels.search >= 0"):
        FeatureFit(search=-1)


def test_the_search_has_its_own_name_in_records_and_refusals():
    """metrics.json's `labels` (and so the report's routes) and the refusals name the method the
    user chose: feature_fit_search is not pooled with feature_fit."""
    assert FeatureFit().name == "feature_fit" and FeatureFit(search=200).name == "feature_fit_search"
    model = build_model(LENET_CFG, 4, (3, 32, 32), seed=0)
    observation = closed_form_observation(model, [0, 1, 2, 3], 4)
    with pytest.raises(DeepleakError, match="^the feature_fit_search label method separates"):
        FeatureFit(search=200).restore(observation)
