"""A paper's name runs the paper's method (issue #21): ``labels=zeroshot`` against an independent
implementation of Geng et al.'s formula and of their code's rounding; GradInversion's one label
lost per duplicate. (LLG against its authors' code: test_label_methods.py.)"""

import numpy as np
import pytest
import torch

from deepleak import metrics
from deepleak.config import make
from deepleak.labels import Adaptive, GradInversion, ZeroShot, ZeroShotPlus
from deepleak.labels.base import CountingLabelMethod, DummyStatistics, counts_to_labels, geng_rounding
from deepleak.labels.fedavg import Interpolated
from deepleak.models import build_model
from deepleak.runtime import trial_seeds
from deepleak.scenarios.base import PrivateBatch
from deepleak.scenarios.fedsgd import FedSGD
from deepleak.tasks.attack import run

from crafted import LENET_CFG, closed_form_observation, constant_feature_lenet, labels_of, observation_from


# --------------------------------------------------------------------------- the reference


def paper_counts(model, weight_gradient, k, num_dummies=None, seed=0, image_shape=(3, 32, 32)):
    """Geng et al.'s lambda_hat_n = K p_hat_n - K S_n / O_hat, written out: O_hat and p_hat from
    ``num_dummies`` uniform dummy images (the generator seeded with ``seed``), S_n the row sums of
    the classifier's weight gradient (the bias gradient is not an argument). None: K dummies,
    like the batch, as the authors' code draws them."""
    dummies = torch.rand((num_dummies or k, *image_shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        features = model.body(dummies)
        p = torch.softmax(model.fc(features), dim=1)
    o_hat = float(features.sum(dim=1).mean())
    p_hat = p.mean(dim=0).double()
    s = weight_gradient.sum(dim=1).double()
    return k * p_hat - k * (s / o_hat)


def authors_rounding(label_p, bs):
    """Geng et al.'s code (jiahuigeng/GeneralDeepLeakage, attack_fedsgd.py, the gdlg branch),
    transcribed: ties broken by class index. May return fewer than ``bs`` labels."""
    reds = np.round(label_p)
    tmp_mods = np.abs(label_p - reds)
    mods = []
    for i, mod in enumerate(tmp_mods):
        mods.append(mod / reds[i] if reds[i] >= 1 else mod)
    label_pred = []
    for idx in np.argsort(mods, kind="stable"):
        if reds[idx] > 0:
            label_pred += [int(idx) for _ in range(int(reds[idx]))]
        if len(label_pred) > bs:
            break
    if len(label_pred) < bs:
        for idx in np.argsort(-np.asarray(mods), kind="stable"):
            if idx not in label_pred:
                label_pred += [int(idx)]
            if len(label_pred) > bs:
                break
    return sorted(label_pred[:bs])


# --------------------------------------------------------------------------- the rounding


@pytest.mark.parametrize(
    "counts, total, expected",
    [
        # Surplus (1 + 1 + 1 + 2 = 5): by relative error class 3 (0.2 / 2) comes first, then
        # 0, 1, 2 (0.4 each); the list is cut at 4, so class 2 loses its unit.
        ([0.6, 0.6, 0.6, 2.2], 4, [0, 1, 3, 3]),
        # round(1.5) = 2 (half to even); errors 0.1/3, 0.1/2, 0.5/2: class 2 is cut to nothing.
        ([2.9, 2.1, 1.5], 4, [0, 0, 0, 1]),
        # Deficit: the absent class with the largest |error| is added, even a negative count.
        ([-0.45, 2.2, 0.3, 1.4], 4, [0, 1, 1, 3]),
        # Every class present and still short: the authors' code returns 3 labels; deepleak
        # completes it with the largest signed error (class 0 before 1 on the tie).
        ([1.4, 1.4, 1.2], 4, [0, 0, 1, 2]),
        ([0.1, 7.8, 0.05, 0.05], 8, [1] * 8),
    ],
)
def test_geng_rounding_crafted(counts, total, expected):
    assert labels_of(counts_to_labels(np.array(counts), total, "geng")) == expected
    reference = authors_rounding(np.array(counts), total)
    if len(reference) == total:
        assert labels_of(geng_rounding(np.array(counts), total)) == reference


def test_geng_rounding_matches_the_authors_code_on_random_counts():
    rng = np.random.default_rng(0)
    short = 0
    for _ in range(2000):
        n = int(rng.integers(2, 25))
        total = int(rng.integers(1, 40))
        counts = rng.multinomial(total, rng.dirichlet(np.ones(n))) + rng.normal(0, rng.choice([0.2, 0.5, 1.0]), n)
        reference = authors_rounding(counts, total)
        got = labels_of(geng_rounding(counts, total))
        assert len(got) == total
        if len(reference) == total:
            assert got == reference, (counts, total)
        else:  # the authors' list comes up short; deepleak's completion only adds to it
            short += 1
            assert not (np.bincount(reference, minlength=n) > np.bincount(got, minlength=n)).any()
    assert 0 < short < 200  # both branches ran


# --------------------------------------------------------------------------- zero-shot = the paper


BATCHES = {
    "unique": list(range(16)),
    "one class x5": [4] * 5 + [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11],
    "one class only": [7] * 8,
    "pairs": [1, 1, 2, 2, 3, 3, 9, 9, 12, 12, 19, 19],
    "random with duplicates": [0, 0, 0, 5, 5, 13, 13, 13, 13, 17, 2, 8, 8, 11, 19, 19],
    "one sample": [6],
}


@pytest.mark.parametrize("name", BATCHES)
def test_zeroshot_is_the_papers_formula_and_rounding(name):
    labels = BATCHES[name]
    k, classes = len(labels), 20
    model = build_model(LENET_CFG, classes, (3, 32, 32), seed=k)
    images = torch.rand((k, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    obs = FedSGD().observe(model, PrivateBatch(images, torch.tensor(labels)), classes)
    weight_gradient = obs.gradient[-2]
    reference = paper_counts(model, weight_gradient, k)
    counts = ZeroShot().counts(obs)
    assert torch.equal(counts, reference)
    assert float(counts.sum()) == pytest.approx(k, abs=1e-4)  # sum_n S_n = 0, sum_n p_hat_n = 1
    restored = labels_of(ZeroShot().restore(obs))
    assert restored == authors_rounding(reference.numpy(), k)
    # Not vacuous: the formula is close to the truth on these untrained-LeNet batches.
    assert metrics.label_accuracy(torch.tensor(restored), torch.tensor(labels), classes) >= 0.75
    # Only the weight gradient is read: a different bias gradient changes nothing.
    other = observation_from(model, weight_gradient, obs.gradient[-1] + 0.01, k, classes)
    assert torch.equal(ZeroShot().counts(other), counts)
    # deepleak's variant with both refinements off gives the paper's counts from its 64 dummies.
    assert torch.equal(ZeroShotPlus(renormalise=False, refine=False).counts(obs), ZeroShot(num_dummies=64).counts(obs))


def test_zeroshot_settings_reach_the_formula():
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    obs = closed_form_observation(model, [1, 1, 2, 5], 10)
    reference = paper_counts(model, obs.gradient[-2], 4, num_dummies=7, seed=3)
    assert torch.equal(ZeroShot(num_dummies=7, seed=3).counts(obs), reference)
    assert not hasattr(ZeroShot(), "renormalise") and not hasattr(ZeroShot(), "refine")


def test_zeroshot_through_the_config(compose, tmp_path):
    """``labels=zeroshot`` end to end: the task's restored labels are the reference's on the
    very observations the task built (rebuilt here from the same seeds)."""
    cfg = compose("labels=zeroshot", "attack=none", "batch_size=16", "dataset.num_classes=20", "model.width=12",
                  "distribution=one_class_r", "distribution.r=4", "trials=4", "save_images=false")
    method = make(cfg.labels)
    assert type(method) is ZeroShot and method.name == "zeroshot" and method.rounding == "geng"
    result = run(cfg, tmp_path)
    assert result["labels"] == "zeroshot"
    dataset, distribution, scenario = (make(cfg[key]) for key in ("dataset", "distribution", "scenario"))
    for record in result["per_trial"]:
        seeds = trial_seeds(cfg.seed, record["trial"])
        indices = distribution.sample(dataset.targets, dataset.num_classes, cfg.batch_size,
                                      np.random.default_rng(seeds["batch"]))
        assert list(indices) == list(record["indices"])
        images, labels = dataset.batch(indices)
        model = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), seeds["model"])
        obs = scenario.observe(model, PrivateBatch(images, labels, torch.as_tensor(indices)), dataset.num_classes,
                               trial=record["trial"])
        reference = paper_counts(obs.model, obs.gradient[-2], 16)
        assert record["restored_labels"] == authors_rounding(reference.numpy(), 16)


def test_default_and_fedavg_configs_name_the_right_zeroshot(compose):
    default = make(compose().labels)  # deepleak's router; its zero-shot is deepleak's variant
    assert type(default) is Adaptive and type(default.zeroshot_plus) is ZeroShotPlus
    plus = make(compose("labels=zeroshot_plus").labels)
    assert (plus.name, plus.renormalise, plus.refine, plus.rounding) == ("zeroshot_plus", True, True, "largest_remainder")
    interpolated = make(compose("labels=fedavg_interpolated").labels)  # Dimitrov et al.'s: the paper's base
    assert type(interpolated.base) is ZeroShot and type(Interpolated().base) is ZeroShot
    for method in (ZeroShot(), plus):  # what the FedAvg methods require of a zero-shot base
        assert isinstance(method, DummyStatistics) and isinstance(method, CountingLabelMethod)
    Interpolated(base=plus)  # accepted for interpolate=statistics


# --------------------------------------------------------------------------- GradInversion


@pytest.mark.parametrize("duplicates", range(9))
def test_gradinversion_loses_one_label_per_duplicate(duplicates):
    """Batch 16, one class 1 + d times: GradInversion never repeats a label, so it gets at most
    16 - d right. Where every present class's row is negative (constant features and a zero
    classifier: p = 1/20 < lambda_n/16 for every present class) it gets exactly that: 1 - d/16."""
    labels = [0] * (duplicates + 1) + list(range(1, 16 - duplicates))
    assert len(labels) == 16
    model = constant_feature_lenet(20, seed=duplicates)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    restored = GradInversion().restore(closed_form_observation(model, labels, 20))
    assert metrics.label_accuracy(restored, torch.tensor(labels), 20) == 1 - duplicates / 16
    # A real client gradient (DLG LeNet, random images): never above the line.
    model = build_model(LENET_CFG, 20, (3, 32, 32), seed=duplicates)
    images = torch.rand((16, 3, 32, 32), generator=torch.Generator().manual_seed(duplicates))
    obs = FedSGD().observe(model, PrivateBatch(images, torch.tensor(labels)), 20)
    assert metrics.label_accuracy(GradInversion().restore(obs), torch.tensor(labels), 20) <= 1 - duplicates / 16
