"""Oracle: the true labels, an upper bound for image quality.

This is the one label "method" that crosses the threat-model boundary, and it does so in
the open: the task hands it the private labels through :meth:`Oracle.reveal`, and the run's
metrics say ``labels: oracle``.
"""

from __future__ import annotations

import torch

from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation


class Oracle:
    name = "oracle"
    uses_truth = True
    requires = ("truth",)  # an imported update: the manifest's truth (checked before any work)

    def __init__(self) -> None:
        self._truth: torch.Tensor | None = None

    def reveal(self, true_labels: torch.Tensor) -> None:
        """Give the oracle the private labels (not an attacker capability)."""
        self._truth = true_labels.detach().cpu().to(torch.int64).clone()

    def restore(self, observation: Observation) -> torch.Tensor:
        if self._truth is None:
            raise DeepleakError("the oracle label method was not given the true labels")
        return torch.sort(self._truth).values
