"""FedAvg: the client trains locally for E epochs and shares its final weights.

The client holds N private samples (the top-level ``batch_size`` of the task), runs E local
epochs of plain SGD (no momentum, no weight decay) in mini-batches of B at rate eta on the
mean cross-entropy, reshuffling its samples at the start of every epoch from its own seed,
and shares W_T after T = E * ceil(N / B) steps. The last mini-batch of an epoch is smaller
when B does not divide N.

The server knows W_0 and the public recipe (N, B, E, eta, BN mode): nothing else, unless a
leak switch says otherwise. Two switches, both off by default and both recorded in the run's
``metrics.json`` under ``metadata_leaked``:

- ``leak_metadata``: the per-step label lists (``metadata["step_labels"]``: T lists of the
  labels in each mini-batch, sorted within the batch), i.e. which classes went into which
  step. It tells the replay attack the per-epoch batch assignment up to same-label swaps.
- ``snapshot_every`` = k > 0: the client also shares its weights after every k-th step
  (``metadata["snapshots"]``: tuple of (step, weights) pairs, steps k, 2k, ... < T), the
  protocol the snapshots attack needs.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from deepleak.defences import ClientContext, Defence
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation, PrivateBatch, Recipe
from deepleak.scenarios.defended import defence_generator, public_defence, undefended
from deepleak.scenarios.recipe import local_sgd, set_bn_mode


class FedAvg:
    """E local epochs of plain SGD over N samples in mini-batches of ``local_batch_size`` (B) at ``lr``.

    - ``bn_mode``: how the client runs batch norm (train: batch statistics of each mini-batch).
    - ``shuffle``: reshuffle the samples every epoch (from ``seed`` and the trial index given to
      :meth:`observe`, else the call count, so every trial of a run gets its own order and a
      trial run alone with ``first_trial`` trains as it does within a longer run); false keeps
      the data order.
    - ``leak_metadata`` / ``snapshot_every``: extra information shared with the server, see
      the module docstring; off (false / 0) by default.
    """

    name = "fedavg"

    def __init__(
        self,
        local_batch_size: int = 2,
        epochs: int = 2,
        lr: float = 0.01,
        bn_mode: str = "train",
        shuffle: bool = True,
        seed: int = 0,
        leak_metadata: bool = False,
        snapshot_every: int = 0,
    ) -> None:
        if local_batch_size < 1:
            raise DeepleakError(f"scenario.local_batch_size (the local mini-batch B) must be >= 1, got {local_batch_size}")
        if epochs < 1:
            raise DeepleakError(f"scenario.epochs must be >= 1, got {epochs}")
        if not lr > 0:
            raise DeepleakError(f"scenario.lr must be > 0, got {lr}")
        if bn_mode not in ("train", "eval"):
            raise DeepleakError(f"scenario.bn_mode must be train or eval, got {bn_mode!r}")
        if snapshot_every < 0:
            raise DeepleakError(f"scenario.snapshot_every must be >= 0 (0: no snapshots), got {snapshot_every}")
        self.local_batch_size = int(local_batch_size)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.bn_mode = bn_mode
        self.shuffle = shuffle
        self.seed = int(seed)
        self.leak_metadata = bool(leak_metadata)
        self.snapshot_every = int(snapshot_every)
        self._calls = 0

    @property
    def metadata_leaked(self) -> dict[str, Any]:
        """What the server receives beyond W_T and the public recipe (for metrics.json)."""
        return {"step_labels": self.leak_metadata, "snapshot_every": self.snapshot_every}

    def observe(self, model: nn.Module, batch: PrivateBatch, num_classes: int, trial: int | None = None,
                defence: Defence | None = None, defence_seed: int = 0) -> Observation:
        """Play the client's local training on ``batch`` (N samples) and return what it shares;
        ``trial`` seeds the shuffle order (default: the number of earlier calls).

        ``defence``: dp_sgd (``per_step``) computes every local step's gradient (clipped per
        sample, noised); every other defence transforms the final update W_T - W_0, and the
        server receives W_0 + the defended update. Draws are seeded by ``defence_seed``."""
        n = len(batch)
        if self.local_batch_size > n:
            raise DeepleakError(
                f"scenario.local_batch_size (B = {self.local_batch_size}) must be <= the client's number of samples "
                f"(top-level batch_size, N = {n})"
            )
        generator = None
        if self.shuffle:
            index = self._calls if trial is None else int(trial)
            seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
        self._calls += 1
        client = set_bn_mode(copy.deepcopy(model), self.bn_mode)
        parameters = list(client.parameters())
        step_labels: list[list[int]] = []
        snapshots: list[tuple[int, tuple[torch.Tensor, ...]]] = []

        def record(step: int, indices: torch.Tensor, _features: torch.Tensor, _logits: torch.Tensor) -> None:
            step_labels.append(sorted(batch.labels[indices].tolist()))
            if self.snapshot_every and step % self.snapshot_every == 0:
                snapshots.append((step, tuple(p.detach().clone() for p in parameters)))

        defended = not undefended(defence)
        if defended and self.snapshot_every:
            raise DeepleakError("scenario.snapshot_every shares undefended intermediate weights; use it with defence=none")
        noise = defence_generator(defence_seed) if defended else None
        step_gradient = None
        if defended and defence.per_step:  # dp_sgd: every local step's gradient is the defended one
            step_gradient = functools.partial(defence.gradient, generator=noise)
        step = local_sgd(client, batch.images, batch.labels, self.epochs, self.local_batch_size, self.lr, generator, record,
                         gradient_fn=step_gradient)
        total = self.epochs * math.ceil(n / self.local_batch_size)
        assert step == total, (step, total)
        if defended and not defence.per_step:
            start = set_bn_mode(copy.deepcopy(model), self.bn_mode)
            update = tuple(end.detach() - begin.detach() for end, begin in zip(parameters, start.parameters()))
            update = defence.defend(update, ClientContext(start, batch.images, batch.labels), noise)
            with torch.no_grad():
                for parameter, begin, change in zip(parameters, start.parameters(), update):
                    parameter.copy_(begin + change)
        metadata: dict[str, Any] = {}
        if self.leak_metadata:
            metadata["step_labels"] = step_labels
        if self.snapshot_every:
            metadata["snapshots"] = tuple(s for s in snapshots if s[0] < total)
        recipe = Recipe(
            num_samples=n,
            batch_size=self.local_batch_size,
            num_classes=num_classes,
            image_shape=tuple(batch.images.shape[1:]),
            epochs=self.epochs,
            lr=self.lr,
            bn_mode=self.bn_mode,
        )
        return Observation(
            scenario=self.name,
            model=copy.deepcopy(model),  # the server's own copy of W_0
            recipe=recipe,
            weights=tuple(p.detach().clone() for p in parameters),
            metadata=metadata,
            defence=public_defence(defence),
        )
