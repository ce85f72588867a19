"""Zero-shot label restoration (Geng et al., 2021; PAPER.md section 1).

With the classifier z = W O + b and mean cross-entropy over K samples, the sum over the
feature axis of the weight gradient is S_n = (1/K) sum_k (p[k,n] - y[k,n]) O_k with
O_k = sum_m O[k,m] >= 0. Replacing O_k and p[k,n] by their means over random dummy inputs
(O_hat, p_hat) gives the count of class n:  lambda_n = K p_hat_n - K S_n / O_hat.
"""

from __future__ import annotations

import copy

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import counts_to_labels, last_layer_gradient
from deepleak.models import features_and_logits
from deepleak.scenarios.base import Observation, set_bn_mode


class ZeroShot:
    """``num_dummies`` dummy inputs drawn as ``dummy`` ('uniform' in [0,1] or 'gaussian'
    around 0.5), rounded to K labels by ``rounding`` (see counts_to_labels)."""

    name = "zeroshot"

    def __init__(self, num_dummies: int = 64, dummy: str = "uniform", rounding: str = "largest_remainder", seed: int = 0) -> None:
        if num_dummies < 1:
            raise DeepleakError(f"labels.num_dummies must be >= 1, got {num_dummies}")
        if dummy not in ("uniform", "gaussian"):
            raise DeepleakError(f"labels.dummy must be uniform or gaussian, got {dummy!r}")
        self.num_dummies = num_dummies
        self.dummy = dummy
        self.rounding = rounding
        self.seed = seed

    def dummy_statistics(self, observation: Observation) -> tuple[float, torch.Tensor]:
        """(O_hat, p_hat): mean feature sum and mean softmax (N,) over dummy inputs."""
        # A copy: train-mode batch norm would update the running statistics of the server's model.
        model = set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode)
        parameter = next(model.parameters())
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.num_dummies, *observation.recipe.image_shape)
        if self.dummy == "uniform":
            x = torch.rand(shape, generator=generator)
        else:
            x = (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp(0, 1)
        with torch.no_grad():
            features, logits = features_and_logits(model, x.to(parameter.device, parameter.dtype))
        return float(features.sum(dim=1).mean()), torch.softmax(logits, dim=1).mean(dim=0)

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts lambda_hat (N,), before rounding."""
        weight_gradient, _ = last_layer_gradient(observation)
        o_hat, p_hat = self.dummy_statistics(observation)
        if o_hat <= 0:
            raise DeepleakError(
                "zero-shot labels need non-negative penultimate features (ReLU or sigmoid); "
                "this model's mean feature sum is not positive"
            )
        k = observation.recipe.num_samples
        s = weight_gradient.sum(dim=1).double().cpu()
        return k * p_hat.double().cpu() - k * s / o_hat

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
