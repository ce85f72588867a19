"""The parts' optional capabilities, declared: what the engine may ask of a distance or a prior
beyond being called.

A distance is ``distance(candidate, target) -> scalar tensor`` over two equal-length lists of
per-layer tensors; a prior is ``prior(images) -> scalar tensor`` on one candidate batch
(K, C, H, W). Each capability below is a ``typing.Protocol`` checked with ``isinstance`` where
the engine chooses a route by it (:mod:`deepleak.attacks.parts.distance` and
:mod:`deepleak.attacks.parts.prior` implement them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

Distance = Callable[[list[Tensor], list[Tensor]], Tensor]
Prior = Callable[[Tensor], Tensor]
# (D, dD/dc as [(coefficient, tensors)], ||dD/dc||)
Direction = tuple[float, list[tuple[float, Sequence[Tensor]]], float]


@runtime_checkable
class FunctionalDistance(Protocol):
    """A distance with the same value in plain torch ops (torch.func transforms: batched restarts)."""

    def functional(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor: ...


@runtime_checkable
class DirectionalDistance(Protocol):
    """A distance with its value and dD/dc in closed form, without a graph (the finite-difference
    image gradient); None where the closed form would lose its digits."""

    def direction(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Direction | None: ...


@runtime_checkable
class RestartDirectionalDistance(Protocol):
    """:class:`DirectionalDistance` for R candidates stacked on a leading axis: (D (R,), dD/dc
    per layer (R, ...)); no graph (batched restarts' finite differences)."""

    def restart_direction(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]: ...


@runtime_checkable
class ClosedFormPrior(Protocol):
    """A prior of the images alone with its value and image gradient in closed form, without a
    graph; the first ``leading`` axes index separate batches (value shaped like them)."""

    def value_and_gradient(self, images: Tensor, leading: int = 0) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class ModelPrior(Protocol):
    """A prior that reads the victim's activations: ``attach(model)`` hooks the attacker's model
    copy (None when active, else why it contributes 0), ``detach()`` removes the hooks. It must
    be called right after the matching forward pass of the same candidate."""

    def attach(self, model: nn.Module) -> str | None: ...

    def detach(self) -> None: ...


@runtime_checkable
class DefenceAware(Protocol):
    """An attack that takes the client's defence into account: ``adaptive`` says whether it
    attacks through the defence's public parameters, and ``check_defence(public)`` refuses,
    before any work, a defence it cannot attack as configured (one-line DeepleakError)."""

    adaptive: bool

    def check_defence(self, public: Mapping[str, Any]) -> None: ...
