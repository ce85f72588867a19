"""Frozen kinks: ReLU and max-pooling as fixed linear maps between two passes.

The finite-difference image gradient (:mod:`deepleak.attacks.engine.image_gradient`) differences two
input gradients, at theta and at theta + e u. Across a kink (a ReLU unit that changes sign,
a max-pool window whose winner changes) the input gradient jumps, and the difference
quotient is meaningless. But autograd's exact double backward treats every kink as fixed:
the derivative of ReLU's backward with respect to its input is zero, and max-pooling routes
its gradient through the indices of the forward pass. So the exact answer is the derivative
*with the kinks frozen where they are at theta*.

:class:`KinkPattern` records that pattern (each ReLU's sign mask, each max-pool's winning
indices, in call order) during the pass at theta and replays it during the passes at
theta + e u, where each ReLU becomes ``x * mask`` and each max-pool a gather at the recorded
indices: smooth in the parameters, so the difference quotient converges to the exact double
backward (tests/test_second_order.py checks it on ReLU/max-pool models). Outside a pass
(``mode == "off"``) the modules are plain ReLU and max-pooling.

Threat model: the pattern comes from the attacker's own dummy images; nothing here sees
the private batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn


class KinkPattern:
    """The on/off pattern of a model's kinks: recorded in one pass, replayed in the next."""

    def __init__(self) -> None:
        self.mode = "off"  # off | record | replay
        self.saved: list[Tensor] = []
        self.position = 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.mode, self.saved = "record", []
        try:
            yield
        finally:
            self.mode = "off"

    @contextmanager
    def replaying(self) -> Iterator[None]:
        if not self.saved:
            raise RuntimeError("no kink pattern recorded: run the pass at theta first")
        self.mode, self.position = "replay", 0
        try:
            yield
        finally:
            self.mode = "off"

    def record(self, value: Tensor) -> None:
        self.saved.append(value)

    def next(self, shape: tuple[int, ...]) -> Tensor:
        if self.position >= len(self.saved):
            raise RuntimeError("the replayed pass calls more kinks than the recorded one")
        value = self.saved[self.position]
        self.position += 1
        if value.shape[0] != shape[0]:
            raise RuntimeError("the replayed pass does not match the recorded one (batch size)")
        return value


class FrozenReLU(nn.Module):
    """ReLU; while its pattern records, it keeps the sign mask, and while it replays it
    multiplies by the recorded mask instead."""

    def __init__(self, pattern: KinkPattern) -> None:
        super().__init__()
        self.pattern = pattern

    def forward(self, x: Tensor) -> Tensor:
        mode = self.pattern.mode
        if mode == "replay":
            return x * self.pattern.next(x.shape)
        if mode == "record":
            self.pattern.record(x > 0)
        return F.relu(x)


class FrozenMaxPool2d(nn.MaxPool2d):
    """MaxPool2d; while its pattern records, it keeps the winning indices, and while it
    replays it gathers the input at those indices instead."""

    def __init__(self, pool: nn.MaxPool2d, pattern: KinkPattern) -> None:
        super().__init__(pool.kernel_size, pool.stride, pool.padding, pool.dilation, False, pool.ceil_mode)
        self.pattern = pattern

    def forward(self, x: Tensor) -> Tensor:
        mode = self.pattern.mode
        if mode == "replay":
            indices = self.pattern.next(x.shape)
            return x.flatten(-2).gather(-1, indices.flatten(-2)).view(indices.shape)
        if mode == "record":
            out, indices = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                        self.ceil_mode, return_indices=True)
            self.pattern.record(indices)
            return out
        return super().forward(x)


# What can be frozen (exact types: a subclass may do more than its parent's forward).
FREEZABLE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.MaxPool2d)


def freeze_kinks(model: nn.Module) -> KinkPattern | None:
    """Swap ``model``'s ReLU and MaxPool2d modules (in place; pass the attacker's copy) for
    frozen-kink ones sharing one :class:`KinkPattern`, which is returned (None: the model
    has none). Modules used more than once keep their call order in the pattern."""
    pattern = KinkPattern()
    swapped = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            # A pool that returns its indices feeds them to the model: left alone (and refused).
            if type(child) in FREEZABLE and not getattr(child, "return_indices", False):
                if id(child) not in swapped:
                    swapped[id(child)] = (FrozenReLU(pattern) if type(child) is nn.ReLU
                                          else FrozenMaxPool2d(child, pattern))
                setattr(parent, name, swapped[id(child)])
    return pattern if swapped else None
