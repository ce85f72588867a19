"""The attacker's model of a public client-side defence (the adaptive attacker).

The client applies a defence (:mod:`deepleak.defences`) to its update before sharing it; the
server sees the defended update and the defence's public description, e.g.
``{"name": "noise", "std": 0.01, "distribution": "gaussian"}``. A naive attacker
(``adaptive=False``) matches the defended update as if it were the clean one. The adaptive
attacker folds what it knows into the objective in one of two places:

- the candidate update of the dummy images (:meth:`DefenceModel.candidate_gradient`): clipping
  (the whole update scaled to the public norm) and DP-SGD (per-sample gradients each clipped
  to C, then averaged) are applied to the candidate as the client applied them to its own;
- the distance between candidate and target (:meth:`DefenceModel.distance`): additive noise
  becomes the matching negative log-likelihood (Gaussian: squared L2 / (2 s^2); Laplace: L1 / b),
  the Bayes-optimal objective of Balunović et al. (ICLR 2022); pruning and Soteria zero entries
  visibly, so only the survivors (target != 0) are matched; quantisation error is bounded by
  the step, so entries are weighted by the step of their tensor.

Units. The target is what the attack matches: the gradient (FedSGD, ``scale`` 1) or the FedAvg
pseudo-gradient (W_0 - W_T) / (lr T) (``scale`` = 1 / (lr T)). Defences that act on the shared
update (noise std, clip norm) are converted to target units by |scale|. DP-SGD acts inside each
local step on gradients, and the pseudo-gradient is already in gradient units: its per-sample
clip is C whatever ``scale`` is, and its noise on the target is sigma C / (B sqrt(T)) (the mean
of T steps, each with N(0, (sigma C)^2) per entry divided by the step's batch size B; Opacus
convention). Under FedAvg the per-sample clipping is modelled at W_0 for all steps, as the
pseudo-gradient itself is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepleak.attacks.parts.distance import L2, _TargetCache
from deepleak.attacks.parts.protocols import Distance
from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

NAMES = ("none", "noise", "clip", "prune", "quantize", "soteria", "dp_sgd", "secagg")
DISTRIBUTIONS = ("gaussian", "laplace")
# Opacus' per-sample clip factor min(1, C / (||g_i|| + 1e-6)).
PER_SAMPLE_EPS = 1e-6
# Keeps the whole-update clip factor finite for a zero candidate.
NORM_FLOOR = 1e-30


def _number(public: Mapping[str, Any], key: str, minimum: float = 0.0, strict: bool = False) -> float:
    """public[key] as a float >= minimum (> minimum when ``strict``), or a one-line DeepleakError."""
    name = public.get("name")
    if key not in public:
        raise DeepleakError(f"the public description of defence {name!r} lacks {key!r}")
    try:
        value = float(public[key])
    except (TypeError, ValueError):
        raise DeepleakError(f"defence {name!r}: {key} must be a number, got {public[key]!r}") from None
    if not (value > minimum if strict else value >= minimum):
        raise DeepleakError(f"defence {name!r}: {key} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")
    return value


class DefenceModel:
    """What the attacker knows about a public defence, as changes to the matching objective.

    - ``public``: the defence's public description (None or name "none": no defence).
    - ``adaptive``: False gives the naive attacker (the plain objective whatever the defence).
    - ``scale``: factor from the shared update to the attack's target (1 for FedSGD, 1/(lr T)
      for the FedAvg pseudo-gradient); converts noise std and clip norms into target units.
    - ``steps`` (T) and ``step_batch_size`` (B): DP-SGD's noise on the target is
      sigma C / (B sqrt(T)). ``step_batch_size`` None: B is the number of images the candidate
      gradient was last computed on (FedSGD: B = K).

    Use: ``distance(candidate_gradient(model, images, labels), target, fallback)`` in place of
    ``fallback(plain candidate, target)``; ``modifies`` False means the two are the same.
    """

    def __init__(self, public: Mapping[str, Any] | None, adaptive: bool = True, scale: float = 1.0,
                 steps: int = 1, step_batch_size: int | None = None) -> None:
        public = dict(public) if public is not None else {"name": "none"}
        name = public.get("name", "none")
        if name not in NAMES:
            raise DeepleakError(f"unknown defence {name!r}; the attacker models {', '.join(NAMES)}")
        if not (math.isfinite(scale) and scale != 0):
            raise DeepleakError(f"the defence model's scale must be a finite nonzero number, got {scale}")
        if int(steps) < 1:
            raise DeepleakError(f"the defence model's steps (local SGD steps T) must be >= 1, got {steps}")
        if step_batch_size is not None and int(step_batch_size) < 1:
            raise DeepleakError(f"the defence model's step_batch_size must be >= 1, got {step_batch_size}")
        self.public = public
        self.name = name
        self.adaptive = bool(adaptive)
        self.scale = abs(float(scale))
        self.steps = int(steps)
        self.step_batch_size = int(step_batch_size) if step_batch_size is not None else None
        self._seen_batch: int | None = None  # B when step_batch_size is None (dp_sgd)
        self._masks = _TargetCache()  # prune / soteria: the survivors per tensor
        self._steps_cache = _TargetCache()  # quantize: the step per tensor
        self._likelihood = L2()  # the Gaussian likelihood's squared error, fused

        # The parameters, in target units where they have them.
        self.std = 0.0  # noise: std of the noise on the target
        self.distribution = "gaussian"
        self.clip_norm = 0.0  # clip: norm limit on the target
        self.per_sample_norm = 0.0  # dp_sgd: C
        self.noise_multiplier = 0.0  # dp_sgd: sigma
        self.bits = 0
        self.stochastic = False
        if name == "noise":
            self.std = _number(public, "std") * self.scale
            self.distribution = public.get("distribution", "gaussian")
            if self.distribution not in DISTRIBUTIONS:
                raise DeepleakError(f"defence 'noise': distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                                    f"got {self.distribution!r}")
        elif name == "clip":
            self.clip_norm = _number(public, "max_norm", strict=True) * self.scale
        elif name in ("prune", "soteria"):
            ratio = _number(public, "ratio")
            if ratio >= 1:
                raise DeepleakError(f"defence {name!r}: ratio must be < 1, got {ratio:g}")
        elif name == "quantize":
            bits = _number(public, "bits", minimum=1)
            if bits != int(bits):
                raise DeepleakError(f"defence 'quantize': bits must be a whole number, got {bits:g}")
            self.bits = int(bits)
            self.stochastic = bool(public.get("stochastic", False))
        elif name == "dp_sgd":
            self.per_sample_norm = _number(public, "max_norm", strict=True)
            self.noise_multiplier = _number(public, "noise_multiplier")

        self.modifies = self.adaptive and (
            name in ("clip", "prune", "quantize", "soteria", "dp_sgd") or (name == "noise" and self.std > 0))
        self.adaptations = self._describe() if self.modifies else []
        if self.modifies:
            log.info("adaptive attacker against %s: %s", name, "; ".join(self.adaptations))

    # ------------------------------------------------------------------ description
    def _describe(self) -> list[str]:
        replaces = "replaces the recipe's distance"
        if self.name == "noise":
            if self.distribution == "gaussian":
                return [f"gaussian likelihood: squared L2 / (2 sigma^2), sigma {self.std:g} in target units ({replaces})"]
            return [f"laplace likelihood: L1 / b, b = sigma / sqrt(2), sigma {self.std:g} in target units ({replaces})"]
        if self.name == "clip":
            return [f"candidate update clipped to norm {self.clip_norm:g} in target units"]
        if self.name == "prune":
            ratio = float(self.public["ratio"])
            return [f"matches only the {100 * (1 - ratio):g}% of entries that survived pruning (target != 0)"]
        if self.name == "soteria":
            return ["matches only the entries Soteria left (target != 0)"]
        if self.name == "quantize":
            if self.stochastic:
                return [f"stochastic {self.bits}-bit quantisation: squared error / step^2 per tensor ({replaces})"]
            return [(f"deterministic {self.bits}-bit quantisation: squared error beyond step/2 (dead zone) / step^2 "
                     f"per tensor ({replaces})")]
        # dp_sgd
        noted = [f"per-sample clipping at C = {self.per_sample_norm:g} modelled"]
        if self.noise_multiplier > 0:
            batch = self.step_batch_size if self.step_batch_size is not None else "K"
            noted.append(f"gaussian likelihood: squared L2 / (2 s^2), s = sigma C / (B sqrt(T)) with sigma "
                         f"{self.noise_multiplier:g}, C {self.per_sample_norm:g}, B {batch}, T {self.steps} "
                         f"({replaces})")
        return noted

    def record(self) -> dict[str, Any]:
        """What metrics.json says about the attacker's model of the defence."""
        return {"adaptive": self.adaptive, "modelled": self.modifies, "adaptations": list(self.adaptations)}

    # ------------------------------------------------------------------ the candidate
    def candidate_gradient(self, model: nn.Module, images: Tensor, labels: Tensor) -> list[Tensor]:
        """The update the client would share for ``images``, before any noise, in target units;
        keeps the graph (differentiable w.r.t. ``images``).

        ``labels``: class indices (K,) or class probabilities (K, C). Plain: the gradient of the
        mean cross-entropy. dp_sgd: the mean of per-sample gradients each clipped to C. clip:
        the plain candidate scaled to at most the public norm."""
        parameters = list(model.parameters())
        if self.modifies and self.name == "dp_sgd":
            self._seen_batch = int(images.shape[0])
            return self._per_sample_clipped(model, parameters, images, labels)
        loss = F.cross_entropy(model(images), labels)
        candidate = list(torch.autograd.grad(loss, parameters, create_graph=True))
        if self.modifies and self.name == "clip":
            norm = torch.stack(torch._foreach_norm(candidate)).square().sum().sqrt()
            factor = torch.clamp(self.clip_norm / norm.clamp_min(NORM_FLOOR), max=1.0)
            candidate = [c * factor for c in candidate]
        return candidate

    def _per_sample_clipped(self, model: nn.Module, parameters: list[Tensor], images: Tensor,
                            labels: Tensor) -> list[Tensor]:
        """(1/K) sum_i min(1, C / (||g_i|| + 1e-6)) g_i, g_i the gradient of sample i's loss.

        One forward and double-backward graph per sample (a loop, not torch.func.vmap): it
        works on any module, and DP-SGD models have no batch norm (Opacus refuses it), so a
        sample's gradient does not depend on the others."""
        total: list[Tensor] | None = None
        for i in range(images.shape[0]):
            loss = F.cross_entropy(model(images[i:i + 1]), labels[i:i + 1])
            gradient = torch.autograd.grad(loss, parameters, create_graph=True)
            norm = torch.stack(torch._foreach_norm(list(gradient))).square().sum().sqrt()
            factor = torch.clamp(self.per_sample_norm / (norm + PER_SAMPLE_EPS), max=1.0)
            clipped = [g * factor for g in gradient]
            total = clipped if total is None else [t + c for t, c in zip(total, clipped)]
        return [t / images.shape[0] for t in total]

    # ------------------------------------------------------------------ the distance
    def distance(self, candidate: Sequence[Tensor], target: Sequence[Tensor], fallback: Distance) -> Tensor:
        """The attack's objective between ``candidate`` (from :meth:`candidate_gradient`) and the
        shared ``target``; a scalar that keeps the candidate's graph. ``fallback``: the recipe's
        own distance, used as is when nothing is modelled (and on the survivors for prune and
        Soteria); the likelihoods of noise, DP-SGD and quantisation replace it."""
        if not self.modifies or self.name == "clip":
            return fallback(list(candidate), list(target))
        if self.name == "noise":
            return self._noise_likelihood(candidate, target, self.std)
        if self.name == "dp_sgd":
            if self.noise_multiplier == 0:
                return fallback(list(candidate), list(target))
            return self._noise_likelihood(candidate, target, self.dp_noise_std())
        if self.name in ("prune", "soteria"):
            masks = self._masks.get(target, _survivors)
            masked = [c if m is None else c * m for c, m in zip(candidate, masks)]
            return fallback(masked, list(target))
        return self._quantisation_likelihood(candidate, target)

    def dp_noise_std(self) -> float:
        """DP-SGD's noise std per entry of the target: sigma C / (B sqrt(T))."""
        batch = self.step_batch_size if self.step_batch_size is not None else self._seen_batch
        if batch is None:
            raise DeepleakError("the dp_sgd defence model needs the client's batch size (step_batch_size) "
                                "before a candidate gradient has been computed")
        return self.noise_multiplier * self.per_sample_norm / (batch * math.sqrt(self.steps))

    def _noise_likelihood(self, candidate: Sequence[Tensor], target: Sequence[Tensor], std: float) -> Tensor:
        """Negative log-likelihood of the target given the candidate (constants dropped)."""
        if self.distribution == "laplace":
            b = std / math.sqrt(2.0)
            return sum((c - t).abs().sum() for c, t in zip(candidate, target)) / b
        return self._likelihood(list(candidate), list(target)) / (2.0 * std**2)

    def _quantisation_likelihood(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        """Per tensor with step d: deterministic rounding, sum(relu(|c - t| - d/2)^2) / d^2 (the
        error is uniform in [-d/2, d/2]: flat inside, a quadratic wall outside); stochastic
        rounding (unbiased, variance <= d^2/4), sum((c - t)^2) / d^2. A constant tensor (d = 0)
        has sum((c - t)^2) with weight 1."""
        steps = self._steps_cache.get(target, lambda t: _quantisation_steps(t, self.bits))
        total = None
        for c, t, d in zip(candidate, target, steps):
            difference = c - t
            if d == 0:
                term = difference.square().sum()
            elif self.stochastic:
                term = difference.square().sum() / d**2
            else:
                term = torch.relu(difference.abs() - d / 2).square().sum() / d**2
            total = term if total is None else total + term
        return total


def _survivors(target: Sequence[Tensor]) -> list[Tensor | None]:
    """Per tensor: the mask target != 0 in its dtype, or None where nothing was zeroed."""
    masks: list[Tensor | None] = []
    for t in target:
        mask = t != 0
        masks.append(None if bool(mask.all()) else mask.to(t.dtype))
    return masks


def _quantisation_steps(target: Sequence[Tensor], bits: int) -> list[float]:
    """Per tensor: (max - min) / (2**bits - 1), the step of its quantisation grid (its own
    min and max are levels, so the step is read off the shared tensor)."""
    levels = 2**bits - 1
    return [float(t.max() - t.min()) / levels if t.numel() else 0.0 for t in target]
