"""What every victim model shares: trained weights as a constructor argument.

Every model class takes ``checkpoint: str | None = None`` and ends its constructor with
:meth:`Victim.load_weights`, as torchvision's ``resnet18(weights=...)`` does, so a model
option of conf/model/ (``model.checkpoint=PATH`` included) builds with
``hydra.utils.instantiate`` alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepleak.errors import DeepleakError


class Victim(nn.Module):
    """Base of the victim models (an ``nn.Module`` with :meth:`load_weights`)."""

    def load_weights(self, checkpoint: str | Path | None) -> None:
        """Replace the initial weights by the state dict at ``checkpoint``; None: keep them."""
        if checkpoint:
            load_checkpoint(self, checkpoint)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or a dict holding one under ``state_dict``/``model``) safely,
    with ``torch.load(weights_only=True)``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DeepleakError(f"model checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors have many types; all mean "not loadable"
        raise DeepleakError(f"cannot load model checkpoint {path}: {error}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise DeepleakError(f"checkpoint {path} does not fit the configured model: {first}") from None
