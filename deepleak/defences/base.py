"""The common shape of client-side defences: what the client holds, the plain gradient, the
base class every option subclasses, and the checks of their parameters.

A defence acts on the client's side of the threat model: it changes the update before the
client shares it. Its ``public()`` parameters are what the server knows; its random draws
(noise, masks) are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepleak.errors import DeepleakError


@dataclass(frozen=True)
class ClientContext:
    """What the client holds when it defends its update: the model at the weights the update
    starts from (W_0, client's BN mode set), its private images (pixels in [0,1], (K,C,H,W))
    and labels (K,) int64."""

    model: nn.Module
    images: Tensor
    labels: Tensor


def mean_loss_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """The plain gradient of the mean cross-entropy w.r.t. ``model.parameters()`` (detached),
    exactly as ``torch.autograd.grad(F.cross_entropy(model(images), labels),
    list(model.parameters()))`` computes it: an undefended client's step, bit for bit."""
    with torch.enable_grad():
        loss = F.cross_entropy(model(images), labels)
        gradient = torch.autograd.grad(loss, list(model.parameters()))
    return tuple(g.detach() for g in gradient)


@runtime_checkable
class DefenceLike(Protocol):
    """What the clients, the training task and the attacker require of a defence (type hints)."""

    name: str
    per_step: bool

    def public(self) -> dict[str, Any]:
        """The defence's name and public parameters (JSON-serialisable)."""

    def check_model(self, model: nn.Module, bn_mode: str) -> None:
        """Raise a DeepleakError for a model the defence cannot run on."""

    def gradient(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """One local step's gradient as the defended client computes it."""

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        """The shared update after the defence."""

    def step_update(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """One step's shared update on a batch: the defended gradient, then the defence."""

    def epsilon(self, steps: int, sample_rate: float) -> dict[str, Any] | None:
        """(epsilon, delta) accounting for DP defences, else None."""


class Defence:
    """A defence that does nothing; the options override what they change.

    ``per_step`` is True only for a defence applied inside every local step (DP-SGD, through
    :meth:`gradient`); the others act once on the shared update (:meth:`defend`).
    """

    name: str = "none"
    per_step: bool = False

    def public(self) -> dict[str, Any]:
        """The defence's name and public parameters, what the server knows: e.g.
        ``{"name": "noise", "std": 0.01, "distribution": "gaussian"}``. JSON-serialisable;
        never the draws or masks."""
        return {"name": self.name}

    def check_model(self, model: nn.Module, bn_mode: str) -> None:
        """Refuse a model the defence cannot run on (DeepleakError, one sentence); default: accept."""

    def gradient(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """One local step's gradient as the defended client computes it. Default:
        :func:`mean_loss_gradient` (bit-identical); ``generator`` is unused."""
        return mean_loss_gradient(model, images, labels)

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        """The shared update after the defence (FedSGD: the gradient; FedAvg: W_T - W_0).
        Default: the same tensors (identity). Never modifies its input in place; tensors it
        leaves alone may be returned as the same objects."""
        return tuple(update)

    def step_update(self, model: nn.Module, images: Tensor, labels: Tensor,
                    generator: torch.Generator) -> tuple[Tensor, ...]:
        """One step's shared update on a batch: :meth:`gradient`, then :meth:`defend` (a FedSGD
        client's gradient; one defended training step)."""
        gradient = self.gradient(model, images, labels, generator)
        return self.defend(gradient, ClientContext(model, images, labels), generator)

    def epsilon(self, steps: int, sample_rate: float) -> dict[str, Any] | None:
        """(epsilon, delta) accounting for DP defences, else None."""
        return None

    def __repr__(self) -> str:
        parameters = ", ".join(f"{key}={value!r}" for key, value in self.public().items() if key != "name")
        return f"{type(self).__name__}({parameters})"


class NoDefence(Defence):
    """The undefended client: shares its plain update."""

    name = "none"


# Parameter checks: one sentence naming the config key (``defence.<key>``).

def real(key: str, value: Any) -> float:
    """``value`` as a finite float; a DeepleakError for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DeepleakError(f"defence.{key} must be a finite number, got {value!r}")
    return float(value)


def integer(key: str, value: Any) -> int:
    """``value`` as an int; a DeepleakError for floats, bools and anything else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeepleakError(f"defence.{key} must be an integer, got {value!r}")
    return int(value)


def fraction(key: str, value: Any) -> float:
    """A ratio in [0, 1) (the fraction a defence removes)."""
    ratio = real(key, value)
    if not 0.0 <= ratio < 1.0:
        raise DeepleakError(f"defence.{key} must be in [0, 1), got {value!r}")
    return ratio


def choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    """One of ``allowed`` strings."""
    if value not in allowed:
        raise DeepleakError(f"defence.{key} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def draws(shape: torch.Size, like: Tensor, generator: torch.Generator, kind: str) -> Tensor:
    """Standard draws (``kind``: "normal" N(0, 1) or "uniform" U[0, 1)) of ``shape``, made in
    float64 on the generator's device (so a seed gives the same numbers whatever the
    update's dtype) and returned in float64 on ``like``'s device."""
    make = torch.randn if kind == "normal" else torch.rand
    return make(shape, generator=generator, device=generator.device, dtype=torch.float64).to(like.device)
