"""``labels=fedavg_fitted``: counts from fitting the classifier's local training to the shared
update (deepleak's).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from deepleak.errors import DeepleakError
from deepleak.labels.base import RestoresLabels, counts_to_labels, dummy_images, probe
from deepleak.labels.fedavg import classifier_fit
from deepleak.labels.fedavg.classifier_fit import ClassifierUpdate
from deepleak.labels.fedavg.interpolated import Interpolated
from deepleak.scenarios.base import Observation

log = logging.getLogger(__name__)


class Fitted:
    """Counts from fitting the classifier's local training to the shared update.

    With features h_k (M,) and logits z = W h + b, the T local steps move the classifier by

        W_T - W_0 = -eta sum_t (1/B) sum_{k in b_t} (p_tk - y_k) h_k^T,  b_T - b_0 likewise,

    a (C, M) matrix of rank <= N. The server knows W_0, W_T, eta and T, not h_k, y_k or the
    batch order. Unknowns: one feature vector per sample (held fixed over the T steps) and one
    soft label per sample (softmax of free logits). The classifier's T steps are replayed with
    the mean over all N samples in every step (the same first-order displacement as any batch
    order, which the server does not know), and Adam minimises the relative squared error
    |dW_sim - dW|^2 / |dW|^2 + |db_sim - db|^2 / |db|^2; the counts are the soft labels' sum.

    - ``iterations``, ``lr``: Adam steps and rate.
    - ``start``: the first estimate of the labels (default: :class:`Interpolated`); features
      start at the public model's features of uniform dummy inputs.
    - Features are kept in the range the dummies' features show: (0, 1) through a sigmoid
      (sigmoid nets), >= 0 through a softplus (ReLU nets), else unconstrained.
    - The fit itself is :func:`deepleak.labels.fedavg.classifier_fit.fit` (Gram form of the steps).

    Measured (scripts/fedavg_labels.py, 20 clients): at N = 8, B = 4, E = 2, eta = 0.01 on the
    DLG LeNet-12 0.938 against 0.906 (interpolated) and 0.931 (simulated). What it cannot see: the features
    move as the body of the network trains, and the per-step batch order matters where single
    steps move the logits far; there the fit finds a wrong label set with a small residual.
    """

    requires = ("weights",)  # FedAvg's shared weights (checked for an imported update before any work)

    name = "fitted"

    def __init__(
        self,
        iterations: int = 1000,
        lr: float = 0.05,
        start: Any = None,
        rounding: str = "largest_remainder",
        seed: int = 0,
    ) -> None:
        if iterations < 1:
            raise DeepleakError(f"labels.iterations must be >= 1, got {iterations}")
        if lr <= 0:
            raise DeepleakError(f"labels.lr must be > 0, got {lr}")
        self.iterations = int(iterations)
        self.lr = float(lr)
        self.start = start if start is not None else Interpolated(seed=seed)
        if not isinstance(self.start, RestoresLabels):
            raise DeepleakError("labels.start must be a label method (it gives the first estimate)")
        self.rounding = rounding
        self.seed = int(seed)

    def fit(self, observation: Observation) -> tuple[torch.Tensor, float]:
        """(soft labels (N, C), final relative residual)."""
        update = ClassifierUpdate.of(observation)
        features, _ = probe(observation, dummy_images(observation, update.num_samples, self.seed + 1))
        first = self.start.restore(observation).cpu()
        logits = 3.0 * F.one_hot(first, observation.recipe.num_classes).double()
        errors, soft = classifier_fit.fit(update, features.double().cpu()[None], None, logits[None], self.iterations, self.lr)
        residual = float(errors[0])
        if not math.isfinite(residual):
            raise DeepleakError("fitted label counts are not finite: the shared weights hold NaN or inf")
        return soft[0], residual

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts (num_classes,) summing to N."""
        soft, residual = self.fit(observation)
        log.debug("fitted labels: relative residual %.3g", residual)
        return soft.sum(dim=0)

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
