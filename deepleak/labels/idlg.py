"""iDLG (Zhao et al., 2020): for one sample, the true class is the row of the classifier's
weight gradient whose sum is negative (p - 1 < 0 times non-negative features).

Checked against the authors' code (PatrickZH/Improved-Deep-Leakage-from-Gradients,
``iDLG.py``): ``label_iDLG = torch.argmin(torch.sum(original_dy_dx[-2], dim=-1), dim=-1)``,
``original_dy_dx[-2]`` being the weight gradient of their last layer (``fc``). The same here:
the classifier's weight gradient (found by name, not by position), summed over the feature
axis, argmin (the first index on ties, as torch's); the bias gradient is not read.
"""

from __future__ import annotations

import torch

from deepleak.labels.base import last_layer_gradient, require_batch_size
from deepleak.scenarios.base import Observation


class IDLG:
    name = "idlg"

    def restore(self, observation: Observation) -> torch.Tensor:
        require_batch_size(self.name, observation, 1)
        weight_gradient, _ = last_layer_gradient(observation)
        return weight_gradient.sum(dim=1).argmin().reshape(1).to(torch.int64).cpu()
