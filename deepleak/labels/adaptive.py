"""deepleak's default label method (``labels=adaptive``): one answer for a victim at any stage
of training, from the shared gradient alone (docs/labels.md, "The default at every stage").

It routes each observation to the method that holds there, on what the server sees:

0. An update that is not one exact gradient: a declared defence (the observation's public
   ``defence``, anything but ``none``) or shared weights (FedAvg, several local steps).
   feature_fit's identities need the exact classifier gradient (pruning at 0.9 took it from
   0.75 to 0.375 on 6 default batches), so the counts are zeroshot_plus's, the default's
   before 2026-12-07, which the defences' published figures used.
1. ``K < classes`` with a bias and a bounded activation before the classifier:
   :class:`~deepleak.labels.feature_fit.FeatureFit`, which fits the batch's own features and so
   does not depend on the victim's training. With ``agree``, its restarts' labels are taken as
   they are where ``zeroshot_plus`` gives the same multiset (two independent estimates
   agreeing; on the tuning victim's stages 70 of 71 such trials were exact at K = 4, 44 of 50
   at K = 8); otherwise the multiset search of ``feature_fit_search`` runs from them, when one
   round of single moves, K (classes - 1) candidates, fits in ``search`` (else the restarts'
   labels are kept).
2. Otherwise ``zeroshot_plus``'s counts, shrunk towards a flat guess as the victim shows itself
   trained, on two readings of the gradient: its confidence c on the batch's own class
   embeddings (iLRG's dW_c / db_c; the mean diagonal of their softmax, chance-corrected: 0
   untrained, 1 certain) and the share m of the batch's labels its softmax misses (the bias
   gradient's exact identity n - s = -K db: m = |n - s|_1 / 2K, 0 when the softmax sums to the
   labels, the mark of a model that fits the batch). zeroshot_plus keeps the weight
   w = 1 / (1 + (|c| / (``shrink`` m^``mass_power``))^``sharpness``) (:meth:`Adaptive.weight`;
   with mass_power 1, c / m against ``shrink``): a trained victim is confident and misses
   little, an untrained one is neither. c alone misreads single batches of a trained victim (3%
   of trained tuning trials read c < 0.2 and kept zeroshot_plus's counts, 0.3-0.5 right at
   K = 64); m alone cannot tell a trained victim from an untrained one with near-uniform
   outputs (an untrained MLP misses only m = 0.08-0.25 of a random batch at K = 64, its
   sampling noise; there c is 0 and zeroshot_plus is exact).
   A confident model's residuals p_i - y_i carry almost no count information and zero-shot's
   dummy softmax does not stand in for the batch's, so there the answer tends to the blind flat
   guess, the best answer without information (its accuracy is the label floor); an untrained
   one (c near 0) keeps zeroshot_plus's counts. The flat guess is K / classes, or K over the
   classes the weight gradient shows surely present (:meth:`present_classes`) where those are
   at most ``present_share`` of the classes: a skewed batch (one class, or a few) on a trained
   victim also reads m near 0, and spread over every class the guess would give most labels to
   classes it does not hold (the tuning victims' trained one-class cells: 0.71 above the label
   floor with the plain guess, 0.81 with this one).
   A batch without skew holds nearly every class at K >= classes and keeps the plain guess,
   which a present class read absent would cost. The weight left to the flat guess, 1 - w, also
   carries ``residual`` times n - s (the batch's label counts less its softmax mass): small
   against a count, it settles which classes get the flat guess's remaining units, the
   under-predicted ones (a class with more samples leaves more residual on its own logit).
   The form is a shrinkage estimator's; ``shrink`` = 0.3, ``sharpness`` = 2, ``mass_power`` = 1,
   ``present_share`` = 0.5 and ``residual`` = 0.1 were chosen on tuning victims with
   scripts/adaptive_fit.py (docs/labels.md, settings tuned on data). Without a bias c cannot be
   computed and the counts are zeroshot_plus's.

Every answer names its route (``label_route`` in metrics.json): ``feature_fit_agreed``,
``feature_fit_search``, ``feature_fit``, ``zeroshot_plus`` (weight 1),
``zeroshot_plus_shrunk`` or ``zeroshot_plus_shrunk_present`` (the flat guess kept to the
classes shown present).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import counts_to_labels, last_layer_gradient
from deepleak.labels.feature_fit import FeatureFit
from deepleak.labels.ilrg import class_embedding_softmax
from deepleak.labels.zeroshot_plus import ZeroShotPlus
from deepleak.models import classifier_parameter_names
from deepleak.scenarios.base import Observation

log = logging.getLogger(__name__)

ROUTES = ("feature_fit_agreed", "feature_fit_search", "feature_fit", "zeroshot_plus", "zeroshot_plus_shrunk",
          "zeroshot_plus_shrunk_present")


class Adaptive:
    """Route each observation to feature_fit(_search) or zeroshot_plus shrunk towards the flat
    guess (module docstring). ``search``: the search's cap on scored candidates (0: never
    search); ``shrink``: the victim's confidence at which zeroshot_plus's counts keep half their
    weight where it misses every label, scaled by m^``mass_power`` (0: never shrink);
    ``present_share``: the share of the classes at or below which the flat guess keeps to the
    classes shown present (0: never); ``agree``: skip the search where zeroshot_plus agrees
    (false: always search, slower); ``seed`` seeds both methods."""

    name = "adaptive"

    def __init__(self, search: int = 200, shrink: float = 0.3, sharpness: float = 2.0, mass_power: float = 1.0,
                 present_share: float = 0.5, residual: float = 0.1, agree: bool = True, seed: int = 0) -> None:
        if min(search, shrink, mass_power, residual) < 0 or sharpness <= 0 or not 0 <= present_share <= 1:
            raise DeepleakError(f"labels.search, labels.shrink, labels.mass_power and labels.residual must be >= 0, "
                                f"labels.sharpness > 0 and labels.present_share in [0, 1], got {search}, {shrink}, "
                                f"{mass_power}, {residual}, {sharpness} and {present_share}")
        self.search = search
        self.shrink = shrink
        self.sharpness = sharpness
        self.mass_power = mass_power
        self.present_share = present_share
        self.residual = residual
        self.agree = agree
        self.fit = FeatureFit(seed=seed, search=search)
        self.zeroshot_plus = ZeroShotPlus(seed=seed)

    def restore(self, observation: Observation) -> torch.Tensor:
        return self.restore_routed(observation)[0]

    def restore_routed(self, observation: Observation) -> tuple[torch.Tensor, str]:
        """(K restored labels, the route that gave them; one of ROUTES)."""
        k, n = observation.recipe.num_samples, observation.recipe.num_classes
        if not self.one_exact_gradient(observation):
            return self.zeroshot_plus.restore(observation), "zeroshot_plus"
        if self.fit.unsuited(observation) is None:
            searches = 0 < k * (n - 1) <= self.search
            agreed = self.zeroshot_plus.restore(observation) if self.agree and searches else None  # only skips a search
            counts, route = self.fit.counts_with_route(observation, agree=agreed, search=searches)
            return counts_to_labels(counts.numpy(), k, self.fit.rounding), route
        confidence = self.confidence(observation)
        counts_less_mass = None if confidence is None else self.counts_less_mass(observation)
        missed = None if counts_less_mass is None else self.missed_mass(counts_less_mass, k)
        weight = self.weight(confidence, missed)
        if weight == 1.0:  # no bias, or shrink = 0
            return self.zeroshot_plus.restore(observation), "zeroshot_plus"
        support = self.flat_support(self.present_classes(observation))
        log.info("labels: zeroshot_plus's counts at weight %.3f against the flat guess over %s (the victim's "
                 "class-embedding confidence %.3f, label mass missed %.3f)", weight,
                 "every class" if support is None else f"the classes shown present ({int(support.sum())} of {n})",
                 confidence, missed)
        counts = self.blend(self.zeroshot_plus.counts(observation), counts_less_mass, weight, k, support)
        route = "zeroshot_plus_shrunk" if support is None else "zeroshot_plus_shrunk_present"
        return counts_to_labels(counts.numpy(), k, self.zeroshot_plus.rounding), route

    def flat_support(self, present: torch.Tensor) -> torch.Tensor | None:
        """The classes the flat guess spreads over: ``present`` where it holds at most
        ``present_share`` of the classes, else None (every class)."""
        return present if float(present.sum()) <= self.present_share * len(present) else None

    @staticmethod
    def present_classes(observation: Observation) -> torch.Tensor:
        """(N,) bool: the classes whose weight-gradient row has a negative entry, each surely in
        the batch. K dL/dW_j = sum_i (p_ij - y_ij) h_i, and with non-negative features h (route
        2 runs zeroshot_plus, which refuses others) a class without samples has a row >= 0
        entrywise. A present class can read absent (its samples so confident that the others'
        p_ij h_i outweigh them in every entry: 2-4% of present classes on trained tuning victims,
        8-15% of a Dirichlet batch's), never the reverse.
        Every class where no row is negative (a degenerate gradient)."""
        present = (last_layer_gradient(observation)[0].detach() < 0).any(dim=1).cpu()
        return present if bool(present.any()) else torch.ones_like(present)

    @staticmethod
    def counts_less_mass(observation: Observation) -> torch.Tensor:
        """n - s = -K db (N,), float64 on the CPU: the batch's label counts less its softmax mass,
        exact for one undefended gradient of mean cross-entropy."""
        bias_gradient = last_layer_gradient(observation)[1]
        assert bias_gradient is not None  # weight < 1 needs the confidence, which needs the bias
        return -observation.recipe.num_samples * bias_gradient.double().cpu()

    def blend(self, zeroshot_plus_counts: torch.Tensor, counts_less_mass: torch.Tensor, weight: float,
              k: int, present: torch.Tensor | None = None) -> torch.Tensor:
        """flat + w (zeroshot_plus - flat) + (1 - w) ``residual`` (n - s), clamped at 0, with
        flat = K / |present| on the ``present`` classes (:meth:`flat_support`; every class
        without) and 0 elsewhere, and zeroshot_plus's counts clamped at 0 and scaled to sum to K
        first.
        n - s = -K db is the bias gradient's exact count-less-mass identity (module docstring,
        route 2). Public so that scripts/adaptive_fit.py scores settings on cached inputs."""
        counts = zeroshot_plus_counts.double().clamp(min=0)
        counts = counts * k / counts.sum() if float(counts.sum()) > 0 else torch.zeros_like(counts)
        present = torch.ones_like(counts, dtype=torch.bool) if present is None else present.to(torch.bool)
        flat = torch.where(present, k / float(present.sum()), 0.0).to(counts.dtype)
        return (flat + weight * (counts - flat) + (1 - weight) * self.residual * counts_less_mass.double()).clamp(min=0)

    @staticmethod
    def missed_mass(counts_less_mass: torch.Tensor, k: int) -> float:
        """m = |n - s|_1 / 2K in [0, 1]: the share of the batch's K labels that its softmax puts on
        other classes (sum n = sum s = K), from :meth:`counts_less_mass`."""
        return float(counts_less_mass.abs().sum()) / (2 * k)

    def weight(self, confidence: float | None, missed: float | None) -> float:
        """zeroshot_plus's weight against the flat guess, 1 / (1 + (|c| / (shrink
        m^mass_power))^sharpness), with c the class-embedding confidence and m the missed label
        mass (:meth:`missed_mass`); 1 without a confidence or with ``shrink`` 0; 0 where a
        confident victim misses nothing (mass_power > 0). Symmetric in c: below chance (down to
        -1 / (classes - 1), every embedding's softmax elsewhere) is a saturated model whose bias
        gradient is so small that the embeddings mean nothing, as far from untrained as a
        confident one."""
        if confidence is None or confidence == 0 or self.shrink == 0:
            return 1.0
        threshold = self.shrink * (missed or 0.0) ** self.mass_power
        if threshold == 0:
            return 0.0
        return 1.0 / (1.0 + (abs(confidence) / threshold) ** self.sharpness)

    @staticmethod
    def one_exact_gradient(observation: Observation) -> bool:
        """Whether the update is one undefended gradient step (FedSGD, or an imported gradient)."""
        defended = observation.defence.get("name", "none") != "none"
        return not defended and observation.gradient is not None and observation.local_steps == 1

    @staticmethod
    def confidence(observation: Observation) -> float | None:
        """The victim's mean softmax on each class's own embedding, chance-corrected: 0 for an
        uninformed model (1 / classes), 1 for a certain one; None without a bias."""
        if classifier_parameter_names(observation.model)[1] is None:
            return None
        n = observation.recipe.num_classes
        diagonal = float(np.mean(torch.diagonal(class_embedding_softmax(observation)).double().cpu().numpy()))
        return (diagonal - 1.0 / n) / (1.0 - 1.0 / n)
