"""Zero-shot label restoration, the paper's method (Geng et al., 2021; docs/method.md
(zero-shot labels)). deepleak's improved variant is :mod:`deepleak.labels.zeroshot_plus`.

With the classifier z = W O + b and mean cross-entropy over K samples, the sum over the
feature axis of the weight gradient is S_n = (1/K) sum_k (p[k,n] - y[k,n]) O_k with
O_k = sum_m O[k,m] >= 0. Replacing O_k and p[k,n] by their means over random dummy inputs
(O_hat, p_hat) gives the count of class n:  lambda_n = K p_hat_n - K S_n / O_hat.
Only the classifier's weight gradient is read (not its bias), and the counts are rounded to K
labels by the authors' rule (``rounding='geng'``, see deepleak.labels.base.geng_rounding).

Checked against the authors' code (jiahuigeng/GeneralDeepLeakage, ``attack_fedsgd.py``, the
``gdlg`` branch): ``label_p = sum_p - (bs / sum_o) * tmp_min`` with ``tmp_min`` the row sums of
the weight gradient, ``sum_p`` the softmax summed over the dummies and ``sum_o`` the dummies'
mean feature sum; then their rounding. Their dummies are ``torch.rand`` like the batch, so
there are K of them and ``sum_p`` = K p_hat: ``num_dummies=None`` (the default) does the same;
deepleak's variant (zeroshot_plus) uses 64 whatever K.
"""

from __future__ import annotations

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import (
    ROUNDING_RULES,
    counts_to_labels,
    dummy_images,
    last_layer_gradient,
    probe,
    require_nonnegative_features,
)
from deepleak.scenarios.base import Observation


class ZeroShot:
    """The paper's zero-shot method: ``num_dummies`` dummy inputs (None: K, as the authors'
    code) drawn as ``dummy`` ('uniform' in [0,1] or 'gaussian' around 0.5) give O_hat and p_hat; the counts
    K p_hat - K S / O_hat are rounded to K labels by ``rounding`` (see counts_to_labels)."""

    name = "zeroshot"

    def __init__(self, num_dummies: int | None = None, dummy: str = "uniform", rounding: str = "geng", seed: int = 0) -> None:
        if num_dummies is not None and num_dummies < 1:
            raise DeepleakError(f"labels.num_dummies must be >= 1, got {num_dummies}")
        if dummy not in ("uniform", "gaussian"):
            raise DeepleakError(f"labels.dummy must be uniform or gaussian, got {dummy!r}")
        if rounding not in ROUNDING_RULES:
            raise DeepleakError(f"unknown rounding rule {rounding!r}; choose {', '.join(ROUNDING_RULES)}")
        self.num_dummies = num_dummies
        self.dummy = dummy
        self.rounding = rounding
        self.seed = seed

    def dummy_outputs(self, observation: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (D, M) and softmax (D, N) of the D = num_dummies dummy inputs."""
        count = self.num_dummies or observation.recipe.num_samples
        images = dummy_images(observation, count, self.seed, self.dummy)
        features, logits = probe(observation, images)
        # The count formula assumes O_k >= 0 (ReLU or sigmoid heads); tanh/SELU/GELU break it.
        require_nonnegative_features(self.name, observation, features)
        return features, torch.softmax(logits, dim=1)

    def dummy_statistics(self, observation: Observation) -> tuple[float, torch.Tensor]:
        """(O_hat, p_hat): mean feature sum and mean softmax (N,) over dummy inputs."""
        features, softmax = self.dummy_outputs(observation)
        return float(features.sum(dim=1).mean()), softmax.mean(dim=0)

    @staticmethod
    def formula(weight_gradient: torch.Tensor, o_hat: float, p_hat: torch.Tensor, k: int) -> torch.Tensor:
        """lambda_hat = K p_hat - K S / O_hat (float64, CPU), S the weight gradient's row sums."""
        if o_hat <= 0:
            raise DeepleakError(
                "zero-shot labels need non-negative penultimate features (ReLU or sigmoid); "
                "this model's mean feature sum is not positive"
            )
        x = weight_gradient.sum(dim=1).double().cpu() / o_hat  # S_n / O_hat
        return k * p_hat.double().cpu() - k * x

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts lambda_hat (N,), before rounding."""
        weight_gradient, _ = last_layer_gradient(observation)
        o_hat, p_hat = self.dummy_statistics(observation)
        return self.formula(weight_gradient, o_hat, p_hat, observation.recipe.num_samples)

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
