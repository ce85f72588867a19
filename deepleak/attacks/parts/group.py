"""Group consistency (Yin et al., "See through Gradients", CVPR 2021).

G candidate batches ("members", each from its own random start) are optimised jointly in one
restart; each matches the shared gradient on its own, and a group term pulls every member
toward an anchor:

    R_group = weight * (1/G) sum_g ||x_g - anchor||_2^2 / (K*C*H*W) = weight * mean((x - anchor)^2)

The anchor is the group mean (1/G) sum_g x_g, **detached** and refreshed every ``every``
steps (the members run free for the first ``every`` steps, while they are still noise). It
is detached because it is a target, not a variable: in Yin et al. it is the registered fusion
of the members, refreshed periodically and held fixed in between; a differentiable mean would
also move the anchor toward each member. Yin et al. register the members before averaging
(RANSAC-flow); deepleak averages without registration: member g's image k carries label k in
every member, so members are paired by position, but a shift between two members' versions of
an image blurs their mean.

The restart's answer is the group mean, scored like a member (``choose=mean``, the default),
or the member with the smallest gradient distance (``choose=best``). Measured on untrained
LeNet (width 32, 32 px, batch 4, 3 members, 1000 Adam steps, 2 batches), the mean is the
better answer at every group weight tried, although its gradient distance is larger:
PSNR 13.65 / 13.47 / 13.54 / 13.44 dB (mean) against 12.79 / 11.72 / 12.45 / 13.28 dB (best)
at weight 0.01 / 1 (anchor every 50 steps) / 10 / 100 (every 20); with one member, 12.49 dB.
Averaging removes the members' independent noise; the weight itself moved the mean by less
than the trial-to-trial noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepleak.errors import DeepleakError

CHOICES = ("best", "mean")


class GroupConsistency:
    """``size`` members (G), ``weight`` of R_group, anchor refresh ``every`` steps, and how a
    restart chooses its answer (``choose``: best | mean). Images: (G, K, C, H, W)."""

    def __init__(self, size: int = 3, weight: float = 1.0, every: int = 50, choose: str = "mean") -> None:
        if size < 1:
            raise DeepleakError(f"attack.group.size must be >= 1, got {size}")
        if not weight >= 0:
            raise DeepleakError(f"attack.group.weight must be >= 0, got {weight}")
        if every < 1:
            raise DeepleakError(f"attack.group.every must be >= 1 (steps between anchor refreshes), got {every}")
        if choose not in CHOICES:
            raise DeepleakError(f"attack.group.choose must be one of {', '.join(CHOICES)}, got {choose!r}")
        self.size = int(size)
        self.weight = float(weight)
        self.every = int(every)
        self.choose = choose

    def refresh_due(self, step: int) -> bool:
        """Whether the anchor is (re)computed before optimiser step ``step`` (0-based)."""
        return step > 0 and step % self.every == 0

    @staticmethod
    def anchor(images: Tensor) -> Tensor:
        """The group mean (K, C, H, W) of ``images`` (G, K, C, H, W), detached."""
        return images.detach().mean(dim=0)

    def __call__(self, images: Tensor, anchor: Tensor | None) -> Tensor:
        """R_group of ``images`` (G, K, C, H, W); 0 before the first anchor."""
        if anchor is None or self.weight == 0:
            return images.new_zeros(())
        return self.weight * ((images - anchor.unsqueeze(0)) ** 2).mean()

    def select(self, distances: list[float]) -> int:
        """The member whose gradient distance is smallest (NaN counts as worst)."""
        ranked = torch.tensor(distances, dtype=torch.float64).nan_to_num(nan=float("inf"))
        return int(torch.argmin(ranked))
