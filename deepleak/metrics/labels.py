"""Label recovery: how well restored labels match the private batch's, order-free.

Labels are int arrays of length K with values in ``[0, num_classes)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepleak.metrics.arrays import _as_labels


def _counts(pred: Any, true: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    p, t = _as_labels(pred), _as_labels(true)
    for name, arr in (("predicted", p), ("true", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got {arr.min()}..{arr.max()}")
    if len(t) == 0:
        raise ValueError("true labels are empty")
    return np.bincount(p, minlength=num_classes), np.bincount(t, minlength=num_classes), len(t)


def label_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """Multiset overlap: sum_c min(n_pred[c], n_true[c]) / K, K = len(true).

    Order-free instance accuracy; equals iLRG's "IRec" (instance recall). true [0,0,1,2] vs
    pred [0,1,1,2] -> (1 + 1 + 1) / 4 = 0.75.
    """
    cp, ct, k = _counts(pred, true, num_classes)
    return float(np.minimum(cp, ct).sum() / k)


def count_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """iLRG's "LnAcc" (label-number accuracy): (1/C) * sum_{c<C} [n_pred[c] == n_true[c]].

    Fraction of all C classes whose instance count is restored exactly, absent classes included
    (as iLRG computes it: accuracy_score over the length-C count vectors). With C >> K the
    absent classes dominate; see :func:`count_accuracy_present` for the stricter variant.
    """
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.mean(cp == ct))


def count_accuracy_present(pred: Any, true: Any, num_classes: int) -> float:
    """Like :func:`count_accuracy` but over the classes present in truth or prediction only:
    mean_{c: n_pred[c] > 0 or n_true[c] > 0} [n_pred[c] == n_true[c]]. Not inflated by large C."""
    cp, ct, _ = _counts(pred, true, num_classes)
    seen = (cp > 0) | (ct > 0)
    return float(np.mean(cp[seen] == ct[seen]))


def existence_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """iLRG's "LeAcc" (label-existence accuracy): (1/C) * sum_{c<C} [(n_pred[c] > 0) == (n_true[c] > 0)].

    Fraction of all C classes whose presence/absence in the batch is restored correctly.
    """
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.mean((cp > 0) == (ct > 0)))


def existence_jaccard(pred: Any, true: Any, num_classes: int) -> float:
    """Jaccard index of the class sets: |P ∩ T| / |P ∪ T| (1.0 only for identical sets)."""
    cp, ct, _ = _counts(pred, true, num_classes)
    p, t = cp > 0, ct > 0
    return float((p & t).sum() / (p | t).sum())


def exact_batch(pred: Any, true: Any, num_classes: int) -> float:
    """1.0 if the predicted and true label multisets are equal (same counts for every class), else 0.0."""
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.array_equal(cp, ct))


def label_metrics(pred: Any, true: Any, num_classes: int) -> dict[str, float]:
    """All label metrics above as a JSON-serialisable dict (keys = function names)."""
    return {fn.__name__: fn(pred, true, num_classes) for fn in (
        label_accuracy, count_accuracy, count_accuracy_present,
        existence_accuracy, existence_jaccard, exact_batch)}


def flat_guess(k: int, num_classes: int) -> np.ndarray:
    """The blind guess: K labels spread as evenly as the classes allow, K // N of each class and
    one more of the first K mod N classes (``flat_guess(4, 3)`` -> ``[0, 0, 1, 2]``). It uses
    nothing the client sent, so its accuracy is the level a label method must beat."""
    if k < 1 or num_classes < 1:
        raise ValueError(f"a flat guess needs k >= 1 and num_classes >= 1, got {k} and {num_classes}")
    counts = np.full(num_classes, k // num_classes)
    counts[: k % num_classes] += 1
    return np.repeat(np.arange(num_classes), counts)


def label_floor(true: Any, num_classes: int) -> float:
    """The label noise floor of one batch: :func:`label_accuracy` of :func:`flat_guess`. For
    K = 64 uniform labels over 10 classes it is about 0.85 on average, for K = 8 about 0.57,
    for K = 64 over 100 classes about 0.47."""
    t = _as_labels(true)
    return label_accuracy(flat_guess(len(t), num_classes), t, num_classes)
