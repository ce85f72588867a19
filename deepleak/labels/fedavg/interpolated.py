"""``labels=fedavg_interpolated``: per-step interpolated counts (Dimitrov et al., TMLR 2022)
around any count-based label method.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import CountingLabelMethod, DummyStatistics, counts_to_labels, dummy_images
from deepleak.labels.fedavg.classifier_fit import shared_weights
from deepleak.labels.fedavg.common import _row_sums, method_name, simulate_training, with_weights
from deepleak.labels.zeroshot import ZeroShot
from deepleak.scenarios.base import Observation


class Interpolated:
    """Per-step interpolated counts (Dimitrov et al.) around any count-based label method.

    - ``base``: the label method (default: the paper's zero-shot, :class:`ZeroShot`); it must have
      ``counts(observation)``. The ``statistics`` route reads only its dummy statistics, which
      :class:`~deepleak.labels.ZeroShotPlus` shares; its counts matter for ``weights``, ``end=simulated``
      and FedSGD observations.
    - ``interpolate``: ``statistics`` (the paper's: the base's dummy statistics O, p at the start
      and end models, linearly interpolated over the T steps; needs ``base.dummy_statistics``)
      or ``weights`` (the base's counts at T models on the straight line from W_0 to the end
      model, averaged; works for any count-based method).
    - ``end``: ``observed`` (the shared W_T, known to the server) or ``simulated`` (the recipe
      replayed on dummy inputs labelled with the pseudo-gradient's labels, Dimitrov's choice).
    - ``points``: how many steps to average over (0: T).
    A FedSGD observation is passed to ``base`` unchanged.
    """

    name = "interpolated"

    def __init__(
        self,
        base: Any = None,
        interpolate: str = "statistics",
        end: str = "observed",
        points: int = 0,
        num_dummies: int = 64,
        rounding: str = "largest_remainder",
        seed: int = 0,
    ) -> None:
        if interpolate not in ("statistics", "weights"):
            raise DeepleakError(f"labels.interpolate must be statistics or weights, got {interpolate!r}")
        if end not in ("observed", "simulated"):
            raise DeepleakError(f"labels.end must be observed or simulated, got {end!r}")
        if points < 0:
            raise DeepleakError(f"labels.points must be >= 0 (0: one per local step), got {points}")
        self.base = base if base is not None else ZeroShot(seed=seed)
        if not isinstance(self.base, CountingLabelMethod):
            raise DeepleakError(f"labels.base ({method_name(self.base)}) has no class counts to interpolate")
        if interpolate == "statistics" and not isinstance(self.base, DummyStatistics):
            raise DeepleakError("labels.interpolate=statistics needs a base method with dummy statistics; use weights")
        self.interpolate = interpolate
        self.end = end
        self.points = int(points)
        self.num_dummies = int(num_dummies)
        self.rounding = rounding
        self.seed = int(seed)

    def end_weights(self, observation: Observation) -> tuple[torch.Tensor, ...]:
        """The end model's weights: observed W_T, or W_T simulated on labelled dummy inputs."""
        if self.end == "observed":
            return shared_weights(observation)
        shared_weights(observation)
        k = observation.recipe.num_samples
        labels = counts_to_labels(self.base.counts(observation.gradient_view()).numpy(), k, self.rounding)
        images = dummy_images(observation, k, self.seed + 1)
        weights, _ = simulate_training(observation, images, labels.to(images.device), self.seed + 2)
        return weights

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts (num_classes,) summing to about N."""
        if observation.weights is None:
            return self.base.counts(observation)
        pseudo = observation.gradient_view()
        start = [p.detach() for p in observation.model.parameters()]
        end = self.end_weights(observation)
        points = self.points or observation.local_steps
        fractions = [t / max(points - 1, 1) for t in range(points)] if points > 1 else [0.5]
        k = observation.recipe.num_samples
        if self.interpolate == "weights":
            total = None
            for a in fractions:
                model = with_weights(observation.model, [s + a * (e.to(s.device) - s) for s, e in zip(start, end)])
                counts = self.base.counts(replace(pseudo, model=model))
                total = counts if total is None else total + counts
            return total / len(fractions)
        o_start, p_start = self.base.dummy_statistics(pseudo)
        o_end, p_end = self.base.dummy_statistics(replace(pseudo, model=with_weights(observation.model, end)))
        s = _row_sums(observation)
        total = torch.zeros_like(s)
        for a in fractions:
            o_t = (1 - a) * o_start + a * o_end
            p_t = (1 - a) * p_start.double().cpu() + a * p_end.double().cpu()
            if o_t <= 0:
                raise DeepleakError("interpolated labels need positive penultimate feature sums (ReLU or sigmoid)")
            total += k * p_t - k * s / o_t
        return total / len(fractions)

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
