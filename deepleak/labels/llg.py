"""LLG (Wainakh et al., "User-level label leakage from gradients in federated learning",
PETS 2022; docs/method.md (baseline label methods)).

g_n = sum_m dL/dW[n, m] = (1/K) sum_k (p[k,n] - y[k,n]) O_k with O_k = sum_m O[k,m] >= 0, so
a negative g_n marks a class present in the batch. Each sample of a class lowers g_n by about
the same "impact" m, estimated from the negative sums themselves:
m = (sum_{g_n < 0} g_n / K) * (1 + 1/#negative). Every negative class is taken once and its
g_n raised by |m|; then the class with the smallest g_n is taken (and raised) until there are
K labels, which is how duplicates come out.
"""

from __future__ import annotations

import torch

from deepleak.labels.base import last_layer_gradient, require_nonnegative_features
from deepleak.scenarios.base import Observation


class LLG:
    """LLG's basic variant (no auxiliary data): K labels, duplicates allowed."""

    name = "llg"
    needs = "non-negative penultimate features"

    def class_sums(self, observation: Observation) -> torch.Tensor:
        """g (N,): the weight gradient of the classifier summed over the feature axis."""
        weight_gradient, _ = last_layer_gradient(observation)
        return weight_gradient.double().sum(dim=1).cpu()

    def restore(self, observation: Observation) -> torch.Tensor:
        require_nonnegative_features(self.name, observation)
        k = observation.recipe.num_samples
        g = self.class_sums(observation)
        negative = torch.nonzero(g < 0).flatten()
        # More negative classes than samples happens only with noisy gradients: keep the K
        # most negative ones rather than returning more than K labels.
        negative = negative[torch.argsort(g[negative], stable=True)][:k]
        # Impact is negative; subtracting it raises the class's sum, so that each further pick
        # of the same class needs it to stay the most negative one.
        impact = (g[negative].sum() / k) * (1 + 1 / len(negative)) if len(negative) else torch.tensor(0.0)
        labels = negative.tolist()
        g[negative] -= impact
        while len(labels) < k:
            chosen = int(torch.argmin(g))
            labels.append(chosen)
            g[chosen] -= impact
        return torch.sort(torch.as_tensor(labels, dtype=torch.int64)).values
