"""Local search over label sets, one label moved at a time, and the settings shared by the
searches whose score is a classifier fit (:mod:`~deepleak.labels.fedavg.fitted_search`,
:mod:`~deepleak.labels.fedavg.image_search`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import SoftLabelFit
from deepleak.labels.fedavg.fitted import Fitted
from deepleak.scenarios.base import Observation

log = logging.getLogger(__name__)


def _moved(labels: torch.Tensor, source: int, target: int) -> torch.Tensor:
    """The sorted label set with one label of class ``source`` changed to ``target``."""
    moved = labels.clone()
    moved[int((moved == source).nonzero()[0])] = target
    return moved.sort().values


def local_search(labels: torch.Tensor, counts: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
                 candidates: int, rounds: int, margin: float, name: str) -> torch.Tensor:
    """Move one label at a time from ``labels`` (N,), while a move lowers ``score`` below
    ``margin`` x the current score, for at most ``rounds`` moves. Each round tries every move
    from one of the ``candidates`` present classes with the most negative excess (``counts``
    (C,) - held count) to one of the ``candidates`` classes with the most positive one, scored
    as one batch: ``score`` maps label sets (K, N) to scores (K,), lower is better."""
    labels = labels.cpu().sort().values
    c = len(counts)
    current = score(labels[None])[0]
    for _ in range(rounds):
        held = torch.bincount(labels, minlength=c).double()
        excess = counts - held
        sources = [int(k) for k in torch.argsort(excess) if held[k] > 0][:candidates]
        targets = [int(k) for k in torch.argsort(excess, descending=True)][:candidates]
        moves = [_moved(labels, source, target) for source in sources for target in targets if source != target]
        if not moves:
            break
        scores = score(torch.stack(moves))
        best = int(scores.argmin())
        log.debug("%s label search: %.4g -> %.4g", name, float(current), float(scores[best]))
        if not scores[best] < margin * current:
            break
        current, labels = scores[best], moves[best]
    return labels


class _FitScoredSearch:
    """The settings and checks shared by the searches whose score is a fit (FittedSearch,
    ImageSearch): the soft fit ``fitted`` whose counts pick the moves, ``starts`` draws per
    scored set, ``candidates`` x ``candidates`` moves per round, at most ``rounds`` moves, each
    below ``margin`` x the current score, every fit ``iterations`` Adam steps at ``lr``."""

    requires = ("weights",)  # FedAvg's shared weights (checked for an imported update before any work)

    def __init__(self, fitted: Any, starts: int, candidates: int, rounds: int, margin: float, iterations: int,
                 lr: float, rounding: str, seed: int) -> None:
        for key, value, low in (("starts", starts, 1), ("candidates", candidates, 1), ("rounds", rounds, 0),
                                ("iterations", iterations, 1)):
            if value < low:
                raise DeepleakError(f"labels.{key} must be >= {low}, got {value}")
        if not 0 < margin <= 1:
            raise DeepleakError(f"labels.margin must be in (0, 1], got {margin}")
        if lr <= 0:
            raise DeepleakError(f"labels.lr must be > 0, got {lr}")
        self.fitted = fitted if fitted is not None else Fitted(seed=seed)
        if not isinstance(self.fitted, SoftLabelFit):
            raise DeepleakError("labels.fitted must be a soft classifier fit (deepleak.labels.fedavg.Fitted)")
        self.starts, self.candidates, self.rounds = int(starts), int(candidates), int(rounds)
        self.margin, self.iterations, self.lr = float(margin), int(iterations), float(lr)
        self.rounding = rounding
        self.seed = int(seed)

    def restore(self, observation: Observation) -> torch.Tensor:
        raise NotImplementedError

    def counts(self, observation: Observation) -> torch.Tensor:
        """The found label set as counts (num_classes,), summing to N."""
        return torch.bincount(self.restore(observation), minlength=observation.recipe.num_classes).double()
