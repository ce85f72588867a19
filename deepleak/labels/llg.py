"""LLG (Wainakh et al., "User-level label leakage from gradients in federated learning",
PETS 2022; docs/method.md (baseline label methods)), as the authors' code runs it.

g_n = sum_m dL/dW[n, m] = (1/K) sum_k (p[k,n] - y[k,n]) O_k with O_k = sum_m O[k,m] >= 0, so
a negative g_n marks a class present in the batch. Each sample of a class lowers g_n by about
the same "impact" m, estimated from the negative sums themselves.

Followed line by line: tklab-tud/LLG, ``Code/Predictor.py``, ``Predictor.v1_prediction``:

    self.gradients_for_prediction = torch.sum(self.setting.dlg.gradient[-2], dim=-1).clone()
    for i_cg, class_gradient in enumerate(self.gradients_for_prediction):
        if class_gradient < 0:
            h1_extraction.append((i_cg, class_gradient))
            impact_acc += class_gradient.item()
    self.impact = (impact_acc / parameter["batch_size"]) * (1 + 1 / parameter["num_classes"])
    for (i_c, _) in h1_extraction:
        self.prediction.append(i_c)
        self.gradients_for_prediction[i_c] = self.gradients_for_prediction[i_c].add(-self.impact)
    for _ in range(parameter["batch_size"] - len(self.prediction)):
        min_id = torch.argmin(self.gradients_for_prediction).item()
        self.prediction.append(min_id)
        self.gradients_for_prediction[min_id] = self.gradients_for_prediction[min_id].add(-self.impact)

So: the row sums of the weight gradient (not the bias), in the gradient's dtype; the impact
m = (sum of the negative g_n / K) * (1 + 1/num_classes), accumulated in Python floats in class
order (the code's offset is 1 + 1/num_classes; a paraphrase of the paper had 1 + 1/#negative);
every negative class taken once, in class order, its g_n raised by |m|; then K - #negative
times the argmin of g (first index on ties), raised by |m| each time; no negative sum: m = 0
and the smallest sum takes every label.

One deviation, forced by deepleak's contract of exactly K labels: with more negative sums than
K (noisy gradients), the authors' loop over ``range(K - len(prediction))`` is empty and they
return every negative class, more than K labels; here the K most negative ones are kept
(ties by class index). The impact is not used then.
"""

from __future__ import annotations

import torch

from deepleak.labels.base import last_layer_gradient, require_nonnegative_features
from deepleak.scenarios.base import Observation


def llg_prediction(class_sums: torch.Tensor, k: int, num_classes: int) -> tuple[list[int], float]:
    """(K labels, unsorted, in the order taken; the impact m) from the row sums ``class_sums`` (N,)."""
    g = class_sums.clone()
    negative = [n for n in range(len(g)) if g[n] < 0]
    impact_acc = 0.0
    for n in negative:
        impact_acc += g[n].item()
    impact = (impact_acc / k) * (1 + 1 / num_classes)
    if len(negative) > k:  # deepleak's: the K most negative (see the module docstring)
        order = sorted(negative, key=lambda n: (g[n].item(), n))
        return order[:k], impact
    labels = list(negative)
    for n in negative:
        g[n] = g[n].add(-impact)
    for _ in range(k - len(labels)):
        chosen = int(torch.argmin(g).item())
        labels.append(chosen)
        g[chosen] = g[chosen].add(-impact)
    return labels, impact


class LLG:
    """LLG's basic variant (no auxiliary data): K labels, duplicates allowed."""

    name = "llg"
    needs = "non-negative penultimate features"

    def class_sums(self, observation: Observation) -> torch.Tensor:
        """g (N,): the weight gradient of the classifier summed over the feature axis, on the CPU."""
        weight_gradient, _ = last_layer_gradient(observation)
        return torch.sum(weight_gradient.detach(), dim=-1).cpu()

    def restore(self, observation: Observation) -> torch.Tensor:
        require_nonnegative_features(self.name, observation)
        labels, _ = llg_prediction(self.class_sums(observation), observation.recipe.num_samples,
                                   observation.recipe.num_classes)
        return torch.sort(torch.as_tensor(labels, dtype=torch.int64)).values
