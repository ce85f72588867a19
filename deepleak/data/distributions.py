"""Label distribution of the private batch: which data-set items a client's batch holds.

Every distribution has a ``name`` and ``sample(targets, num_classes, k, rng)``, which returns
k data-set indices (int64 array of shape (k,)). ``targets`` (N,) is the label of every item.
Items within one class are always distinct (sampled without replacement), except in
RepeatedImage. The order of the batch is random. Requests that cannot be met raise
DeepleakError naming the setting and its limit.
"""

from __future__ import annotations

import math

import numpy as np

from deepleak.errors import DeepleakError

__all__ = [
    "Distribution",
    "Random",
    "Unique",
    "OneClass",
    "OneClassR",
    "RepeatedImage",
    "EveryClassR",
    "Dirichlet",
    "DISTRIBUTIONS",
]


def _pools(targets: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each class: pools[c] holds the data-set indices with label c."""
    targets = np.asarray(targets).reshape(-1)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise DeepleakError(f"the data set has labels outside 0..{num_classes - 1}, so num_classes={num_classes} is too small")
    order = np.argsort(targets, kind="stable")
    bounds = np.cumsum(np.bincount(targets.astype(np.int64), minlength=num_classes))
    return np.split(order.astype(np.int64), bounds[:-1])


def _check_k(name: str, k: int, n: int) -> int:
    if int(k) != k or k < 1:
        raise DeepleakError(f"the {name} distribution needs batch_size of at least 1, got {k}")
    if k > n:
        raise DeepleakError(f"the {name} distribution needs batch_size <= data set size ({n}), got {k}")
    return int(k)


def _check_r(name: str, r: int) -> int:
    if int(r) != r or r < 1:
        raise DeepleakError(f"the {name} distribution needs r of at least 1, got {r}")
    return int(r)


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct indices from pool."""
    return rng.choice(pool, size=n, replace=False).astype(np.int64)


class Distribution:
    """Base class: ``sample(targets, num_classes, k, rng)`` -> (k,) int64 data-set indices."""

    name = "distribution"

    def sample(self, targets: np.ndarray, num_classes: int, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={val!r}" for key, val in vars(self).items())
        return f"{type(self).__name__}({params})"


class Random(Distribution):
    """k items uniformly at random from the whole data set, without replacement."""

    name = "random"

    def sample(self, targets, num_classes, k, rng):
        n = len(targets)
        k = _check_k(self.name, k, n)
        return rng.choice(n, size=k, replace=False).astype(np.int64)


class Unique(Distribution):
    """k distinct classes chosen at random, one item each."""

    name = "unique"

    def sample(self, targets, num_classes, k, rng):
        pools = _pools(targets, num_classes)
        k = _check_k(self.name, k, len(targets))
        present = [c for c, p in enumerate(pools) if len(p)]
        if k > len(present):
            raise DeepleakError(f"the {self.name} distribution needs batch_size <= number of classes ({len(present)}), got {k}")
        classes = rng.choice(present, size=k, replace=False)
        return np.array([rng.choice(pools[c]) for c in classes], dtype=np.int64)


class OneClass(Distribution):
    """One class chosen at random (among those with >= k items), k distinct items of it."""

    name = "one_class"

    def sample(self, targets, num_classes, k, rng):
        pools = _pools(targets, num_classes)
        k = _check_k(self.name, k, len(targets))
        big = [c for c, p in enumerate(pools) if len(p) >= k]
        if not big:
            raise DeepleakError(f"the {self.name} distribution needs batch_size <= images in the largest class ({max(map(len, pools))}), got {k}")
        return _draw(pools[rng.choice(big)], k, rng)


class OneClassR(Distribution):
    """One class r times, the other k - r items from k - r distinct other classes.

    E.g. k=8, r=4 gives labels like [1, 1, 1, 1, 2, 3, 4, 5] (shuffled).
    """

    name = "one_class_r"

    def __init__(self, r: int = 2):
        self.r = _check_r(self.name, r)

    def sample(self, targets, num_classes, k, rng):
        pools = _pools(targets, num_classes)
        k = _check_k(self.name, k, len(targets))
        r = self.r
        if r > k:
            raise DeepleakError(f"the {self.name} distribution needs r <= batch_size ({k}), got r={r}")
        present = [c for c, p in enumerate(pools) if len(p)]
        if k - r + 1 > len(present):
            raise DeepleakError(f"the {self.name} distribution needs batch_size - r + 1 <= number of classes ({len(present)}), got {k - r + 1}")
        big = [c for c in present if len(pools[c]) >= r]
        if not big:
            raise DeepleakError(f"the {self.name} distribution needs r <= images in the largest class ({max(map(len, pools))}), got r={r}")
        main = rng.choice(big)
        others = rng.choice([c for c in present if c != main], size=k - r, replace=False)
        idx = np.concatenate([_draw(pools[main], r, rng)] + [_draw(pools[c], 1, rng) for c in others])
        return rng.permutation(idx)


class RepeatedImage(Distribution):
    """One item chosen at random, repeated k times."""

    name = "repeated_image"

    def sample(self, targets, num_classes, k, rng):
        n = len(targets)
        if n == 0:
            raise DeepleakError(f"the {self.name} distribution needs a non-empty data set")
        if int(k) != k or k < 1:
            raise DeepleakError(f"the {self.name} distribution needs batch_size of at least 1, got {k}")
        return np.full(int(k), rng.integers(n), dtype=np.int64)


class EveryClassR(Distribution):
    """ceil(k / r) distinct classes, each r times (the last one k mod r times if that is > 0).

    E.g. k=6, r=2 gives labels like [1, 1, 2, 2, 3, 3] (shuffled).
    """

    name = "every_class_r"

    def __init__(self, r: int = 2):
        self.r = _check_r(self.name, r)

    def sample(self, targets, num_classes, k, rng):
        pools = _pools(targets, num_classes)
        k = _check_k(self.name, k, len(targets))
        r = self.r
        full, rest = divmod(k, r)
        need = full + (rest > 0)
        present = [c for c, p in enumerate(pools) if len(p)]
        if need > len(present):
            raise DeepleakError(f"the {self.name} distribution needs ceil(batch_size / r) <= number of classes ({len(present)}), got {need}")
        big = [c for c in present if len(pools[c]) >= r]
        if full > len(big):
            raise DeepleakError(f"the {self.name} distribution needs batch_size // r <= classes with at least r={r} images ({len(big)}), got {full}")
        chosen = list(rng.choice(big, size=full, replace=False)) if full else []
        if rest:
            spare = [c for c in present if c not in set(chosen) and len(pools[c]) >= rest]
            if not spare:
                raise DeepleakError(f"the {self.name} distribution needs one more class with at least {rest} images for the last {rest} of batch_size={k}, but none is left")
            chosen.append(rng.choice(spare))
        counts = [r] * full + [rest] * (rest > 0)
        idx = np.concatenate([_draw(pools[c], m, rng) for c, m in zip(chosen, counts)])
        return rng.permutation(idx)


class Dirichlet(Distribution):
    """Class proportions p ~ Dirichlet(alpha) over all classes, counts ~ Multinomial(k, p).

    Small alpha gives few dominant classes, large alpha near-uniform classes. A class can
    give at most as many items as it has (items are distinct); any overflow is redrawn over
    the classes with room left, in proportion to p.
    """

    name = "dirichlet"

    def __init__(self, alpha: float = 0.5):
        if not (math.isfinite(float(alpha)) and float(alpha) > 0):
            raise DeepleakError(f"the {self.name} distribution needs alpha > 0, got {alpha}")
        self.alpha = float(alpha)

    def sample(self, targets, num_classes, k, rng):
        pools = _pools(targets, num_classes)
        k = _check_k(self.name, k, len(targets))
        sizes = np.array([len(p) for p in pools])
        p = rng.dirichlet(np.full(num_classes, self.alpha))
        counts = rng.multinomial(k, p)
        while (counts > sizes).any():
            over = int((counts - sizes).clip(min=0).sum())
            counts = np.minimum(counts, sizes)
            room = counts < sizes
            q = np.where(room, p, 0.0)
            # With tiny alpha p can underflow to 0 on every class with room left.
            q = q / q.sum() if q.sum() > 0 else room / room.sum()
            counts = counts + rng.multinomial(over, q)
        idx = np.concatenate([_draw(pools[c], int(m), rng) for c, m in enumerate(counts) if m])
        return rng.permutation(idx)


# Config name -> class, for code that picks a distribution by name.
DISTRIBUTIONS: dict[str, type[Distribution]] = {
    cls.name: cls for cls in (Random, Unique, OneClass, OneClassR, RepeatedImage, EveryClassR, Dirichlet)
}
