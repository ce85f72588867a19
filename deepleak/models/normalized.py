"""A model that normalises its input pixels itself: ``model((x - mean) / std)``.

An imported client may have normalised its images before its model saw them. Wrapping the
model in :class:`Normalized` moves that step inside the model call, so attackers keep
optimising images in [0, 1] (real pixels; the PNGs look right for any normalisation) and
the gradient they match is the client's.

The wrapped model is the submodule ``model``: its parameters keep their order in
``parameters()`` (the order of every shared gradient and weight list) and their names gain
the prefix ``model.``. ``mean`` and ``std`` are non-persistent buffers: they move with
``.to(device)`` and stay out of ``state_dict()``. The classifier (the last ``nn.Linear``)
and the penultimate features are found through the wrapper as on the bare model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepleak.errors import DeepleakError


class Normalized(nn.Module):
    """``model`` run on ``(x - mean) / std``, one mean and std per channel."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise DeepleakError(f"normalization needs one mean and one std per channel, got {len(mean)} and {len(std)}")
        if any(not s > 0 for s in std):
            raise DeepleakError(f"normalization std must be > 0 for every channel, got {list(std)}")
        self.model = model
        dtype = next(iter(model.parameters()), torch.empty(0)).dtype
        self.register_buffer("mean", torch.tensor([float(m) for m in mean], dtype=dtype).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std], dtype=dtype).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
