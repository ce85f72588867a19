"""The common shape of label-restoration methods and the rounding of counts to labels.

A label method is an attacker: ``restore(observation)`` sees only what the server sees and
returns K integer labels (int64 tensor, sorted by class; their order carries no
information). Methods that cannot work on an observation raise a DeepleakError saying why.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import copy

import numpy as np
import torch
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.models import classifier, classifier_parameter_names, features_and_logits
from deepleak.models.layers import ACTIVATIONS
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import set_bn_mode


class LabelMethod(Protocol):
    name: str

    def restore(self, observation: Observation) -> torch.Tensor:
        """K restored labels, int64, sorted."""


# What a method that wraps another label method requires of it, checked with isinstance
# (runtime checks see only that the members exist, not their signatures).

@runtime_checkable
class Named(Protocol):
    """Has a ``name`` (every label method; a stand-in may not)."""

    name: str


@runtime_checkable
class RestoresLabels(Protocol):
    """Restores labels: all a first estimate (a search's or a fit's ``start``) needs."""

    def restore(self, observation: Observation) -> torch.Tensor:
        """K restored labels, int64, sorted."""


@runtime_checkable
class CountingLabelMethod(Protocol):
    """Gives real-valued class counts before rounding (what FedAvg methods average or interpolate)."""

    def counts(self, observation: Observation) -> torch.Tensor:
        """Class counts (num_classes,), summing to about K."""


@runtime_checkable
class DummyStatistics(Protocol):
    """Estimates the batch's statistics from dummy inputs (zero-shot's O_hat and p_hat)."""

    def dummy_statistics(self, observation: Observation) -> tuple[float, torch.Tensor]:
        """(mean penultimate feature sum, mean softmax (num_classes,)) over dummy inputs."""


@runtime_checkable
class SoftLabelFit(Protocol):
    """Fits soft labels to a shared FedAvg update (:class:`deepleak.labels.fedavg.Fitted`)."""

    def fit(self, observation: Observation) -> tuple[torch.Tensor, float]:
        """(soft labels (N, C), final relative residual)."""


def last_layer_gradient(observation: Observation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The shared gradient of the classifier's weight (N, M) and bias (N,) (None if absent)."""
    weight_name, bias_name = classifier_parameter_names(observation.model)
    named = observation.named_gradient()
    return named[weight_name], (named[bias_name] if bias_name else None)


ROUNDING_RULES = ("geng", "largest_remainder", "round")


def counts_to_labels(counts: np.ndarray | torch.Tensor, total: int, rule: str = "largest_remainder") -> torch.Tensor:
    """Turn real-valued per-class counts into exactly ``total`` sorted integer labels.

    Rules:
    - ``geng``: the rule of Geng et al.'s code (see :func:`geng_rounding`): round, then drop the
      surplus from, or add absent classes for the deficit by, relative rounding error.
    - ``largest_remainder``: negatives clipped to 0; floor every count, then give the missing
      units to the classes with the largest fractional parts (or take surplus units from the
      smallest ones).
    - ``round``: negatives clipped to 0; round every count, then add (or remove) one unit at a
      time in the order of the signed rounding error (deepleak's; close to, not the same as,
      ``geng``).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(counts)):
        raise DeepleakError("label counts are not finite: the shared update holds NaN or inf")
    if rule == "geng":
        return geng_rounding(counts, total)
    # No class can hold more than ``total`` samples; the bound also keeps the loops below
    # short when an ill-conditioned method returns huge counts.
    counts = np.clip(counts, 0.0, float(total))
    if rule == "largest_remainder":
        integer = np.floor(counts)
    elif rule == "round":
        integer = np.round(counts)
    else:
        raise DeepleakError(f"unknown rounding rule {rule!r}; choose {', '.join(ROUNDING_RULES)}")
    error = counts - integer  # > 0: the class deserves more; < 0: less
    missing = total - int(integer.sum())
    # Each round gives (or takes) at most one unit per class, in the order of the rounding
    # error, so one class can take several units when the deficit is large.
    while missing > 0:
        order = np.argsort(-error, kind="stable")[:missing]
        integer[order] += 1
        error[order] -= 1
        missing -= len(order)
    while missing < 0:
        candidates = [c for c in np.argsort(error, kind="stable") if integer[c] > 0][:-missing]
        integer[candidates] -= 1
        error[candidates] += 1
        missing += len(candidates)
    return _labels(integer, total)


def geng_rounding(counts: np.ndarray, total: int) -> torch.Tensor:
    """The rounding of Geng et al.'s code (jiahuigeng/GeneralDeepLeakage, ``attack_fedsgd.py``,
    the ``gdlg`` branch after ``label_p = sum_p - (bs / sum_o) * tmp_min``), step by step:

    1. ``reds = round(counts)`` (half to even); the error of class n is |counts_n - reds_n|,
       divided by reds_n where reds_n >= 1 (a relative error), absolute otherwise.
    2. Classes in ascending error order, each with reds_n > 0 adding reds_n copies, until the
       list holds more than ``total`` labels; the list is cut to ``total``, so a surplus comes
       off the classes with the largest relative error.
    3. Short of ``total``: classes not yet in the list (reds_n <= 0), in descending error
       order, one copy each, until ``total``.

    Counts are not clipped (a count of -0.4 has error 0.4, like one of 0.4). Two differences,
    neither changing a result of the authors' code: ties in the error are broken by class index
    (their sorts are not stable), and a class adds at most ``total + 1`` copies (the list is cut
    at ``total`` anyway). One case the authors' code leaves short (it returns fewer than
    ``total`` labels when the deficit exceeds the number of absent classes, e.g. K = 64 over 10
    classes) is completed here as by ``round``: one unit at a time to the class with the largest
    signed error counts - held.
    """
    counts = np.asarray(counts, dtype=np.float64)
    reds = np.round(counts)
    error = np.abs(counts - reds)
    error = np.where(reds >= 1, error / np.maximum(reds, 1), error)
    labels: list[int] = []
    for n in np.argsort(error, kind="stable"):
        if reds[n] > 0:
            labels += [int(n)] * int(min(reds[n], total + 1))
        if len(labels) > total:
            break
    labels = labels[:total]
    if len(labels) < total:
        for n in np.argsort(-error, kind="stable"):
            if int(n) not in labels:
                labels.append(int(n))
            if len(labels) >= total:
                break
    held = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(counts)).astype(np.float64)
    while held.sum() < total:  # deepleak's completion; see above
        held[int(np.argmax(counts - held))] += 1
    return _labels(held, total)


def _labels(integer: np.ndarray, total: int) -> torch.Tensor:
    """Per-class integer counts (N,) summing to ``total`` -> sorted labels (total,) int64."""
    labels = np.repeat(np.arange(len(integer)), integer.astype(np.int64))
    assert len(labels) == total, (len(labels), total)
    return torch.as_tensor(labels, dtype=torch.int64)


def require_batch_size(method: str, observation: Observation, size: int) -> None:
    if observation.recipe.num_samples != size:
        raise DeepleakError(
            f"the {method} label method works on a batch of {size} only, got batch_size="
            f"{observation.recipe.num_samples}; use labels=zeroshot"
        )


def last_activation(model: nn.Module) -> str | None:
    """Name ('sigmoid', 'relu', ...) of the last activation module registered before the
    classifier, or None when the model has none that deepleak knows."""
    head = classifier(model)
    found = None
    for module in model.modules():
        if module is head:
            break
        for name, kind in ACTIVATIONS.items():
            if type(module) is kind:
                found = name
    return found


def dummy_images(observation: Observation, count: int, seed: int, kind: str = "uniform") -> torch.Tensor:
    """``count`` random images (count, C, H, W) in [0, 1] on the model's device: ``uniform``
    in [0, 1] or ``gaussian`` around 0.5 (std 0.25, clamped). No real data: "zero-shot"."""
    parameter = next(observation.model.parameters())
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *observation.recipe.image_shape)
    if kind == "uniform":
        x = torch.rand(shape, generator=generator)
    else:
        x = (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return x.to(parameter.device, parameter.dtype)


def probe(observation: Observation, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features (D, M), logits (D, N)) of ``images`` under the public model, run
    in the recipe's BN mode on a copy (train-mode batch norm would update the running
    statistics of the server's model)."""
    model = set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode)
    with torch.no_grad():
        return features_and_logits(model, images)


def require_nonnegative_features(method: str, observation: Observation, features: torch.Tensor | None = None,
                                 num_probes: int = 8) -> None:
    """Refuse models whose penultimate features can be negative.

    Methods that read class presence off the sign of a row of the weight gradient (iDLG, LLG,
    GradInversion, zero-shot) rely on (p - y) * O having the sign of (p - y), i.e. O >= 0.
    ``features`` (K, M) are features the caller has already computed on dummy inputs; without
    them ``num_probes`` uniform random images are probed.
    """
    if features is None:
        features, _ = probe(observation, dummy_images(observation, num_probes, seed=0))
    if bool((features < 0).any()):
        activation = last_activation(observation.model)
        cause = f": model.activation_fn={activation} gives negative ones" if activation else ""
        raise DeepleakError(
            f"the {method} label method needs non-negative penultimate features (ReLU or sigmoid){cause}"
        )


def missing_bias(method: str, observation: Observation) -> str | None:
    """Why ``method`` cannot read a bias gradient (a classifier layer without bias), or None."""
    if classifier_parameter_names(observation.model)[1] is None:
        return f"the {method} label method needs a bias in the classifier layer; this model has none"
    return None


def require_bias(method: str, observation: Observation) -> None:
    """Refuse a classifier layer without a bias (its gradient is what some methods read)."""
    reason = missing_bias(method, observation)
    if reason is not None:
        raise DeepleakError(reason)


def require_batch_at_most_classes(method: str, observation: Observation) -> None:
    """Refuse batches larger than the number of classes (for methods that never repeat a label)."""
    k, n = observation.recipe.num_samples, observation.recipe.num_classes
    if k > n:
        raise DeepleakError(
            f"the {method} label method never repeats a label, so it needs batch_size <= num_classes "
            f"({n}), got {k}; use labels=zeroshot"
        )


__all__ = [
    "LabelMethod", "ROUNDING_RULES", "counts_to_labels", "geng_rounding", "last_activation", "last_layer_gradient", "require_batch_at_most_classes",
    "missing_bias", "require_batch_size", "require_bias", "require_nonnegative_features",
]


@runtime_checkable
class RoutesLabels(Protocol):
    """Chooses among methods per observation and names its choice (``labels=adaptive``); the
    task records the name as ``label_route``."""

    def restore_routed(self, observation: Observation) -> tuple[torch.Tensor, str]:
        """(K restored labels, int64, sorted; the route that gave them)."""


@runtime_checkable
class RevealsTruth(Protocol):
    """A label "method" that is handed the private labels (the oracle: an upper bound, not an
    attack). The task reveals them before ``restore`` and records the run as oracle-labelled."""

    def reveal(self, true_labels: torch.Tensor) -> None:
        """Take the private labels (K,) int64."""
