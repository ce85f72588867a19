"""Label distributions of the private batch: exact label counts, distinct items, errors."""

import numpy as np
import pytest

from deepleak.data.distributions import (
    DISTRIBUTIONS,
    Dirichlet,
    EveryClassR,
    OneClass,
    OneClassR,
    Random,
    RepeatedImage,
    Unique,
)
from deepleak.errors import DeepleakError

NUM_CLASSES = 10
# 10 classes with 20 items each, shuffled so that indices do not reveal labels.
TARGETS = np.random.default_rng(0).permutation(np.repeat(np.arange(NUM_CLASSES), 20)).astype(np.int64)
# Uneven: class c has c + 1 items (class 9 has 10).
UNEVEN = np.repeat(np.arange(NUM_CLASSES), np.arange(1, NUM_CLASSES + 1)).astype(np.int64)


def draw(dist, k, targets=TARGETS, seed=0):
    idx = dist.sample(targets, NUM_CLASSES, k, np.random.default_rng(seed))
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.shape == (k,)
    assert idx.min() >= 0 and idx.max() < len(targets)
    return idx


def sorted_counts(idx, targets=TARGETS):
    """Label multiplicities in the batch, largest first, e.g. [4, 1, 1, 1, 1]."""
    return sorted(np.bincount(targets[idx]).tolist(), reverse=True)[: len(np.unique(targets[idx]))]


def distinct(idx):
    return len(set(idx.tolist())) == len(idx)


@pytest.mark.parametrize("seed", range(5))
def test_random(seed):
    assert distinct(draw(Random(), 50, seed=seed))
    assert sorted(draw(Random(), 200, seed=seed).tolist()) == list(range(200))  # k = data set size


@pytest.mark.parametrize("seed", range(5))
def test_unique(seed):
    idx = draw(Unique(), 8, seed=seed)
    assert sorted_counts(idx) == [1] * 8 and distinct(idx)
    assert sorted_counts(draw(Unique(), 10, seed=seed)) == [1] * 10


@pytest.mark.parametrize("seed", range(5))
def test_one_class(seed):
    idx = draw(OneClass(), 16, seed=seed)
    assert sorted_counts(idx) == [16] and distinct(idx)
    # Only class 9 has 10 items in UNEVEN.
    assert set(UNEVEN[draw(OneClass(), 10, UNEVEN, seed)].tolist()) == {9}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k, r", [(8, 4), (8, 2), (8, 8), (10, 1), (4, 2)])
def test_one_class_r(seed, k, r):
    idx = draw(OneClassR(r=r), k, seed=seed)
    assert sorted_counts(idx) == ([r] + [1] * (k - r) if r > 1 else [1] * k)
    assert distinct(idx)


def test_one_class_r_is_shuffled():
    patterns = set()
    for seed in range(20):
        labels = TARGETS[draw(OneClassR(r=4), 8, seed=seed)]
        main = np.bincount(labels).argmax()
        patterns.add(tuple(labels == main))
    assert len(patterns) > 1  # the repeated class is not always in the same slots


@pytest.mark.parametrize("seed", range(5))
def test_repeated_image(seed):
    idx = draw(RepeatedImage(), 8, seed=seed)
    assert len(set(idx.tolist())) == 1


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k, r, expected", [(8, 2, [2, 2, 2, 2]), (7, 2, [2, 2, 2, 1]), (9, 4, [4, 4, 1]), (20, 2, [2] * 10), (5, 1, [1] * 5)])
def test_every_class_r(seed, k, r, expected):
    idx = draw(EveryClassR(r=r), k, seed=seed)
    assert sorted_counts(idx) == expected and distinct(idx)


def test_every_class_r_uneven_classes():
    idx = draw(EveryClassR(r=8), 24, UNEVEN)  # exactly classes 7, 8, 9 have >= 8 items
    assert sorted(np.unique(UNEVEN[idx]).tolist()) == [7, 8, 9] and distinct(idx)
    few = np.array([0, 0, 0, 0, 0, 1], dtype=np.int64)  # the last 2 need a second class with >= 2 items
    with pytest.raises(DeepleakError, match="one more class with at least 2 images"):
        EveryClassR(r=4).sample(few, NUM_CLASSES, 6, np.random.default_rng(0))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("alpha", [0.01, 0.5, 100.0])
def test_dirichlet(seed, alpha):
    idx = draw(Dirichlet(alpha=alpha), 64, seed=seed)
    assert distinct(idx)  # 64 > 20 items per class: overflow must go to other classes


def test_dirichlet_alpha_controls_spread():
    def num_labels(alpha):
        return np.mean([len(np.unique(TARGETS[draw(Dirichlet(alpha), 16, seed=s)])) for s in range(30)])

    assert num_labels(0.05) < 3 < 7 < num_labels(100.0)


def test_dirichlet_fills_whole_dataset():
    idx = draw(Dirichlet(0.1), len(UNEVEN), UNEVEN)
    assert sorted(idx.tolist()) == list(range(len(UNEVEN)))


def test_deterministic_given_rng():
    for dist in (Random(), Unique(), OneClass(), OneClassR(3), RepeatedImage(), EveryClassR(3), Dirichlet(0.5)):
        assert np.array_equal(draw(dist, 8, seed=7), draw(dist, 8, seed=7)), dist


def test_registry_names():
    assert set(DISTRIBUTIONS) == {"random", "unique", "one_class", "one_class_r", "repeated_image", "every_class_r", "dirichlet"}
    for name, cls in DISTRIBUTIONS.items():
        assert cls.name == name


@pytest.mark.parametrize(
    "dist, k, targets, words",
    [
        (Random(), 0, TARGETS, "batch_size of at least 1, got 0"),
        (Random(), 201, TARGETS, r"data set size \(200\), got 201"),
        (Unique(), 16, TARGETS, r"the unique distribution needs batch_size <= number of classes \(10\), got 16"),
        (Unique(), -1, TARGETS, "at least 1"),
        (OneClass(), 21, TARGETS, r"images in the largest class \(20\), got 21"),
        (OneClass(), 11, UNEVEN, r"largest class \(10\)"),
        (OneClassR(r=9), 8, TARGETS, r"r <= batch_size \(8\), got r=9"),
        (OneClassR(r=2), 12, TARGETS, r"batch_size - r \+ 1 <= number of classes \(10\), got 11"),
        (OneClassR(r=11), 12, UNEVEN, r"r <= images in the largest class \(10\), got r=11"),
        (RepeatedImage(), 0, TARGETS, "at least 1"),
        (RepeatedImage(), 4, TARGETS[:0], "non-empty"),
        (EveryClassR(r=2), 22, TARGETS, r"ceil\(batch_size / r\) <= number of classes \(10\), got 11"),
        (EveryClassR(r=8), 32, UNEVEN, r"classes with at least r=8 images \(3\), got 4"),
        (Dirichlet(0.5), 201, TARGETS, "data set size"),
    ],
)
def test_errors(dist, k, targets, words):
    with pytest.raises(DeepleakError, match=words) as err:
        dist.sample(targets, NUM_CLASSES, k, np.random.default_rng(0))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make", [lambda: OneClassR(r=0), lambda: EveryClassR(r=-1), lambda: Dirichlet(alpha=0), lambda: Dirichlet(alpha=float("nan"))])
def test_bad_parameters(make):
    with pytest.raises(DeepleakError):
        make()


def test_labels_out_of_range():
    with pytest.raises(DeepleakError, match="num_classes=10 is too small"):
        Unique().sample(np.array([0, 10]), NUM_CLASSES, 1, np.random.default_rng(0))
