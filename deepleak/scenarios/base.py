"""What a federated client shares, and the only thing the attacker may look at.

The threat-model boundary of deepleak runs through this module. A scenario takes the
private batch and the global model and returns an :class:`Observation`. Everything the
attacker (label methods, reconstruction attacks) receives is an Observation: the public
model, the public training recipe and the shared update. The private batch never crosses
this line; only :mod:`deepleak.metrics` compares against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class PrivateBatch:
    """The client's private data. Pixels in [0, 1], shape (K, C, H, W); labels (K,) int64.

    Only scenarios (which play the client) and metrics (which score the attack) touch it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor | None = None  # positions in the data set, for the record

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Recipe:
    """The client's public training recipe, known to the server.

    ``num_samples`` is K for FedSGD (one batch) and N for FedAvg (the client's whole data).
    ``lr`` and ``epochs`` matter for FedAvg only. ``bn_mode`` says whether batch-norm layers
    run in train mode (batch statistics) or eval mode (running statistics) on the client.
    """

    num_samples: int
    batch_size: int
    num_classes: int
    image_shape: tuple[int, int, int]
    epochs: int = 1
    lr: float = 0.0
    bn_mode: str = "train"
    loss: str = "mean cross-entropy"


@dataclass(frozen=True)
class Observation:
    """All the attacker sees.

    ``model`` is the attacker's own copy of the public global model at W_0 (changing it does
    not touch the client's). ``gradient`` (FedSGD) is the gradient of the *mean* loss over the
    batch, one tensor per entry of ``model.parameters()`` in that order. ``weights`` (FedAvg)
    are the client's weights after local training, in the same order. ``metadata`` holds any
    extra information the scenario is configured to leak (empty by default). ``defence`` is
    the client's defence as the server knows it: its name and public parameters
    (``{"name": "none"}`` without one), never its noise draws or masks
    (:mod:`deepleak.defences`).
    """

    scenario: str
    model: nn.Module
    recipe: Recipe
    gradient: tuple[torch.Tensor, ...] | None = None
    weights: tuple[torch.Tensor, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    defence: dict[str, Any] = field(default_factory=lambda: {"name": "none"})

    @property
    def local_steps(self) -> int:
        """T = E * ceil(N / B): the client's SGD steps (1 for FedSGD)."""
        return self.recipe.epochs * math.ceil(self.recipe.num_samples / self.recipe.batch_size)

    def gradient_view(self) -> Observation:
        """This observation with a gradient: itself for FedSGD; for shared weights, the
        pseudo-gradient (W_0 - W_T) / (lr * T) (docs/method.md (labels under FedAvg)), which gradient-based
        label methods and attacks then treat as the gradient of the mean loss over N samples."""
        if self.gradient is not None:
            return self
        if self.weights is None:
            raise ValueError(f"the {self.scenario} scenario shares neither gradient nor weights")
        if self.recipe.lr <= 0:
            raise ValueError("a pseudo-gradient needs the public learning rate (recipe.lr > 0)")
        scale = 1.0 / (self.recipe.lr * self.local_steps)
        gradient = tuple(
            (start.detach() - end.to(start.device)) * scale
            for start, end in zip(self.model.parameters(), self.weights)
        )
        return replace(self, gradient=gradient)

    def named_gradient(self) -> dict[str, torch.Tensor]:
        """The shared gradient (or pseudo-gradient, see gradient_view) keyed by parameter name."""
        names = [name for name, _ in self.model.named_parameters()]
        return dict(zip(names, self.gradient_view().gradient))


@runtime_checkable
class Scenario(Protocol):
    """A federated client (FedSGD, FedAvg): it plays its local training on the private batch
    and returns what the server receives. ``metadata_leaked``: what the server receives beyond
    the update and the public recipe, by switch (recorded in metrics.json; {} for none)."""

    name: str

    @property
    def metadata_leaked(self) -> dict[str, Any]: ...

    def observe(self, model: nn.Module, batch: PrivateBatch, num_classes: int, trial: int | None = None,
                defence: Any = None, defence_seed: int = 0) -> Observation:
        """Play the client on ``batch`` at the global ``model`` (trial: seeds its randomness);
        ``defence`` (:class:`deepleak.defences.Defence`, None: none) protects the shared update,
        its draws seeded by ``defence_seed``."""


class ImportedClient(NamedTuple):
    """A real client's update read from files (:class:`ProvidesClient`): what the server
    received (``observation``), the auditor's copy of the client's data to score the attack
    (``truth``; None: unscored), the task's shape (``num_classes``, ``image_shape``),
    ``source`` (where it came from, for metrics.json's ``dataset``) and ``regeneration``
    (with truth: how well replaying the client's recipe on it reproduces the update,
    ``{cosine, relative_error, order}``; None without truth)."""

    observation: Observation
    truth: PrivateBatch | None
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str
    regeneration: dict[str, Any] | None = None


@runtime_checkable
class ProvidesClient(Protocol):
    """A scenario that brings its own client instead of simulating one: the model, the update
    and (optionally) the truth come from files (``scenario=imported``). The task then samples
    no private batch and builds no model; it branches on this protocol.

    ``check(needs)`` reads and checks everything before any work (one-line DeepleakError);
    ``needs`` maps a chosen label method or attack (``"attack FedAvgReplay"``) to what it needs
    beyond a gradient (``"weights"``, ``"truth"``, ``"snapshots"``), and a need the files cannot
    meet is refused naming the missing key. ``num_examples`` is K (FedSGD) or N (FedAvg)."""

    name: str

    @property
    def metadata_leaked(self) -> dict[str, Any]: ...

    def check(self, needs: Mapping[str, Sequence[str]] | None = None) -> int:
        """Read and check every file; returns num_examples."""

    def load(self, device: torch.device) -> ImportedClient:
        """The observation, truth and shapes, on ``device``."""
