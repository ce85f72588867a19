"""What a defended client needs beyond its defence: the seeded generator of its draws, the
public record the server receives, and the test for "no defence" that keeps an undefended
client's numbers bit for bit."""

from __future__ import annotations

from typing import Any

import torch

from deepleak.defences import Defence, NoDefence


def undefended(defence: Defence | None) -> bool:
    """Whether the client shares its update as computed (None or ``defence=none``)."""
    return defence is None or isinstance(defence, NoDefence)


def defence_generator(seed: int) -> torch.Generator:
    """The CPU generator of a defence's draws (noise, stochastic rounding), one per trial."""
    return torch.Generator().manual_seed(int(seed))


def public_defence(defence: Defence | None) -> dict[str, Any]:
    """The defence's name and public parameters, as the Observation carries them."""
    return {"name": "none"} if defence is None else dict(defence.public())
