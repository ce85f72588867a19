"""Zero-shot label restoration (Geng et al., 2021; docs/method.md (zero-shot labels)).

With the classifier z = W O + b and mean cross-entropy over K samples, the sum over the
feature axis of the weight gradient is S_n = (1/K) sum_k (p[k,n] - y[k,n]) O_k with
O_k = sum_m O[k,m] >= 0. Replacing O_k and p[k,n] by their means over random dummy inputs
(O_hat, p_hat) gives the count of class n:  lambda_n = K p_hat_n - K S_n / O_hat.
"""

from __future__ import annotations

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import (
    counts_to_labels,
    dummy_images,
    last_layer_gradient,
    probe,
    require_nonnegative_features,
)
from deepleak.labels.ilrg import class_embedding_softmax
from deepleak.scenarios.base import Observation


class ZeroShot:
    """``num_dummies`` dummy inputs drawn as ``dummy`` ('uniform' in [0,1] or 'gaussian'
    around 0.5), rounded to K labels by ``rounding`` (see counts_to_labels).

    ``renormalise`` (deepleak's refinement, off = the paper's method): nearly all of the
    method's error comes from p_hat, the dummy inputs' mean softmax, standing in for the real
    batch's (with the real batch's mean softmax it is exact on untrained LeNet). For a class
    that the first pass finds absent, S_n / O_hat *is* the batch's mean softmax; a second pass
    uses those values and rescales p_hat over the present classes so the softmax still sums
    to 1. Measured on the setting of docs/method.md (findings that shaped the defaults) it adds about 0.4 points.

    ``refine`` (deepleak's refinement; needs a bias in the classifier, skipped without one):
    the remaining error is p_hat standing in for the batch's mean softmax p_bar, and with the
    true p_bar the bias gradient gives the counts exactly (lambda = K p_bar - K db). One step
    estimates K p_bar as P_hat^T lambda, P_hat (N, N) being the softmax of iLRG's class-wise
    embeddings dW_c / db_c (see deepleak.labels.ilrg), with lambda the zero-shot counts.
    Iterating it to its fixed point (iLRG's system without the sum constraint) loses the gain
    again, so it is one step. It is taken only when the dummies' softmax varies enough across
    inputs that K p_hat is expected to miss K p_bar by more than a quarter label
    (sqrt(K) * max_n std_n > 0.25); otherwise the dummies are already accurate and the step
    could only add the error of the embeddings. Measured (label accuracy, without -> with):
    untrained LeNet-12, K = 16, 20 classes, r = 1..9, 200 batches, two seeds: worst r 0.976 ->
    0.990; LeNet-12, K = 1024, 20 classes: 0.948 -> 0.993; untrained ResNet-18 (its softmax
    std over inputs is ~0.002, so the step is skipped), K = 256, 10 classes: 1.00 -> 0.95 if
    it were taken.
    """

    name = "zeroshot"
    REFINE_MIN_SPREAD = 0.25  # labels; see ``refine`` and counts()

    def __init__(
        self,
        num_dummies: int = 64,
        dummy: str = "uniform",
        rounding: str = "largest_remainder",
        renormalise: bool = True,
        refine: bool = True,
        seed: int = 0,
    ) -> None:
        if num_dummies < 1:
            raise DeepleakError(f"labels.num_dummies must be >= 1, got {num_dummies}")
        if dummy not in ("uniform", "gaussian"):
            raise DeepleakError(f"labels.dummy must be uniform or gaussian, got {dummy!r}")
        self.num_dummies = num_dummies
        self.dummy = dummy
        self.rounding = rounding
        self.renormalise = renormalise
        self.refine = refine
        self.seed = seed

    def dummy_outputs(self, observation: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (D, M) and softmax (D, N) of the D = num_dummies dummy inputs."""
        images = dummy_images(observation, self.num_dummies, self.seed, self.dummy)
        features, logits = probe(observation, images)
        # The count formula assumes O_k >= 0 (ReLU or sigmoid heads); tanh/SELU/GELU break it.
        require_nonnegative_features(self.name, observation, features)
        return features, torch.softmax(logits, dim=1)

    def dummy_statistics(self, observation: Observation) -> tuple[float, torch.Tensor]:
        """(O_hat, p_hat): mean feature sum and mean softmax (N,) over dummy inputs."""
        features, softmax = self.dummy_outputs(observation)
        return float(features.sum(dim=1).mean()), softmax.mean(dim=0)

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts lambda_hat (N,), before rounding."""
        weight_gradient, bias_gradient = last_layer_gradient(observation)
        features, softmax = self.dummy_outputs(observation)
        o_hat, p_hat = float(features.sum(dim=1).mean()), softmax.mean(dim=0)
        if o_hat <= 0:
            raise DeepleakError(
                "zero-shot labels need non-negative penultimate features (ReLU or sigmoid); "
                "this model's mean feature sum is not positive"
            )
        k = observation.recipe.num_samples
        # x_n = S_n / O_hat estimates p_bar_n - lambda_n / K.
        x = weight_gradient.sum(dim=1).double().cpu() / o_hat
        p_hat = p_hat.double().cpu()
        counts = k * p_hat - k * x
        if self.renormalise:
            first = torch.as_tensor(counts_to_labels(counts.numpy(), k, self.rounding))
            absent = (torch.bincount(first, minlength=len(counts)) == 0) & (x > 0)
            present = ~absent
            if absent.any() and present.any() and float(x[absent].sum()) < 1:
                refined = p_hat.clone()
                refined[absent] = x[absent]
                refined[present] = p_hat[present] * (1 - x[absent].sum()) / p_hat[present].sum()
                counts = k * refined - k * x
        # How far K p_hat may sit from the batch's K p_bar if the batch's softmaxes vary like the
        # dummies' (sampling error of a mean of K): below a quarter label the dummies are already
        # accurate and the refinement step could only add the error of its embeddings.
        spread = k**0.5 * float(softmax.std(dim=0).max()) if len(softmax) > 1 else float("inf")
        if self.refine and bias_gradient is not None and spread > self.REFINE_MIN_SPREAD:
            batch_softmax_sum = class_embedding_softmax(observation).T @ counts.clamp(min=0)  # ~ K p_bar
            counts = batch_softmax_sum - k * bias_gradient.double().cpu()
        return counts

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
