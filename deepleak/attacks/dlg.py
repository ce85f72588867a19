"""DLG (Zhu et al., "Deep Leakage from Gradients", NeurIPS 2019): images and labels jointly.

Dummy images and dummy label logits z (K, N), drawn from N(0, 1), are optimised together so
that the gradient of cross-entropy(model(x), softmax(z)) (soft labels as the target, mean
over the batch) matches the shared one. No label restoration: the restored labels the task
passes in only fix K and are otherwise ignored. The reported labels are argmax softmax(z);
the task scores them as the labels this attack used (``optimises_labels``: the result says
``labels_from_attack``).
"""

from __future__ import annotations

import torch

from deepleak.attacks.gradient_matching import GradientMatching


class DLG(GradientMatching):
    """GradientMatching (same settings and loop) with soft labels as extra variables."""

    optimises_labels = True

    def label_variables(self, labels, num_classes, members, generator, device):
        """Label logits (G, K, num_classes) from N(0, 1), as in DLG's code."""
        return torch.randn((members, len(labels), num_classes), generator=generator).to(device).requires_grad_(True)

    def loss_labels(self, labels, variables):
        """softmax(z) (K, N): the soft target of the cross-entropy."""
        return torch.softmax(variables, dim=-1)

    def answer_labels(self, labels, variables):
        """argmax softmax(z) (K,): the attack's own labels."""
        return variables.argmax(dim=-1)
