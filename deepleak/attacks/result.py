"""What every attack returns: :class:`Reconstruction`.

The common fields are what the task records for any recipe; a recipe's own fields go into
``extras`` (JSON-ready, written to metrics.json as they are) and its own scores against the
truth into ``scorers``, so the task needs to know no recipe by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# psnr(x, y) -> (K,) per-image PSNR in dB for (K, C, H, W) arrays in [0, 1]: the task hands in
# deepleak.metrics.psnr (the attacker's side does not import the metrics).
PSNR = Callable[[np.ndarray, np.ndarray], np.ndarray]
# scorer(private images (K, C, H, W) on CPU, permutation, psnr) -> {metrics.json key: value}.
Scorer = Callable[[torch.Tensor, Sequence[int], PSNR], dict[str, Any]]


@dataclass
class Reconstruction:
    """The attack's answer. ``images`` (K, C, H, W) in [0, 1], paired with ``labels`` (K,).

    ``gradient_distance`` is the distance (without priors) of the chosen restart;
    ``restart_distances`` lists every restart's final distance (inf where it diverged).
    ``evaluations`` counts gradient evaluations (one per candidate batch and closure call,
    plus the scoring of each kept iterate). ``inactive_priors`` names the priors that
    contributed 0 and why (a BN prior on a model without BN); ``prior_values`` each prior's
    weighted value on the answer. ``labels_from_attack``: the labels are the attack's own
    (DLG optimises them), not the restored ones it was given.

    ``extras``: the recipe's own fields, recorded as they are (e.g. ``member_distances`` with
    group consistency, ``image_gradient_agreement``/``image_gradient_step`` with finite
    differences, ``conv_kernels`` other than onednn, the replay's ``epoch_agreement``,
    ``replay_assignment``, ``replay_schedule``, ``relaxed_distance``). ``scorers``: the
    recipe's own scores against the truth, run by :meth:`score`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    gradient_distance: float
    restart_distances: list[float]
    best_restart: int
    iterations: int
    evaluations: int
    seconds: float
    iteration_seconds: float = 0.0  # of ``seconds``, the restarts' descents (the rest: set-up and the pick)
    nonfinite_restarts: int = 0
    stopped_by_budget: bool = False
    interrupted: bool = False  # Ctrl-C / SIGTERM: the best result so far, then the caller stops
    history: list[float] = field(default_factory=list)
    stopped_by_evaluations: bool = False
    inactive_priors: dict[str, str] = field(default_factory=dict)
    prior_values: dict[str, float] = field(default_factory=dict)
    labels_from_attack: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    scorers: list[Scorer] = field(default_factory=list, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        """The fields every run records for a reconstruction, scored or not (metrics.json
        keys); the recipe's ``extras`` are recorded beside them."""
        return dict(
            gradient_distance=self.gradient_distance,
            restart_distances=self.restart_distances,
            best_restart=self.best_restart,
            iterations=self.iterations,
            evaluations=self.evaluations,
            attack_seconds=self.seconds,
            attack_iteration_seconds=self.iteration_seconds,
            nonfinite_restarts=self.nonfinite_restarts,
            stopped_by_budget=self.stopped_by_budget,
            interrupted=self.interrupted,
            stopped_by_evaluations=self.stopped_by_evaluations,
            inactive_priors=self.inactive_priors,
            prior_values=self.prior_values,
        )

    def score(self, private_images: torch.Tensor, permutation: Sequence[int], psnr: PSNR) -> dict[str, Any]:
        """The recipe's own scores: ``private_images`` (K, C, H, W) on CPU, ``permutation`` the
        pairing of ``images`` to them (``metrics.image_metrics``'s), ``psnr`` the metric."""
        scores: dict[str, Any] = {}
        for scorer in self.scorers:
            scores.update(scorer(private_images, permutation, psnr))
        return scores
