"""GradInversion's label rule (Yin et al., CVPR 2021; docs/method.md (baseline label methods)).

For mean cross-entropy, row n of the classifier's weight gradient is
dL/dW[n, :] = (1/K) sum_k (p[k,n] - y[k,n]) O_k. With non-negative features O_k, a class
present in the batch has a row with strongly negative entries (the -y term), an absent class
a non-negative row. GradInversion takes the K classes whose row minimum is most negative, so
it never outputs a duplicate: a batch with r samples of one class loses r - 1 labels.
"""

from __future__ import annotations

import torch

from deepleak.labels.base import last_layer_gradient, require_batch_at_most_classes, require_nonnegative_features
from deepleak.scenarios.base import Observation


class GradInversion:
    """K distinct labels: the classes with the K smallest row minima of dL/dW (N, M)."""

    name = "gradinversion"
    needs = "non-negative penultimate features; batch_size <= num_classes (never repeats a label)"

    def row_minima(self, observation: Observation) -> torch.Tensor:
        """min_m dL/dW[n, m] for every class n: (N,)."""
        weight_gradient, _ = last_layer_gradient(observation)
        return weight_gradient.min(dim=1).values

    def restore(self, observation: Observation) -> torch.Tensor:
        require_batch_at_most_classes(self.name, observation)
        require_nonnegative_features(self.name, observation)
        k = observation.recipe.num_samples
        # stable sort: ties (e.g. identical rows) resolve to the lower class, deterministically.
        order = torch.sort(self.row_minima(observation).double().cpu(), stable=True).indices
        return torch.sort(order[:k]).values.to(torch.int64)
