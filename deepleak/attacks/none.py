"""``attack=none``: restore labels only, reconstruct no images (label sweeps cost one gradient)."""

from __future__ import annotations


class NoAttack:
    name = "none"

    def reconstruct(self, observation, labels, seed: int = 0):
        return None
