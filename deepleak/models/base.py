"""What every victim model shares: trained weights as a constructor argument.

Every model class takes ``checkpoint: str | None = None`` and ends its constructor with
:meth:`Victim.load_weights`, as torchvision's ``resnet18(weights=...)`` does, so a model
option of conf/model/ (``model.checkpoint=PATH`` included) builds with
``hydra.utils.instantiate`` alone.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

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
    """Load a state dict (or a dict holding one under ``state_dict``/``model``) safely:
    tensors only (:func:`read_torch_file`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DeepleakError(f"model checkpoint {path} does not exist")
    state = read_torch_file(path, "model checkpoint")
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        first = first if len(first) <= 300 else first[:297] + "..."
        raise DeepleakError(f"checkpoint {path} does not fit the configured model: {first}") from None


_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")
# Modules whose names hide the one users know: posix.system is os.system.
_KNOWN_AS = {"posix": "os", "nt": "os", "__builtin__": "builtins"}


def read_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and
    containers of them only; no code runs. A file that holds anything else (a pickled class
    or function such as ``os.system``) is refused in one line naming what it holds, and
    torch's advice to retry with ``weights_only=False`` (the one thing never to do with a
    stranger's file) is not passed on."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _GLOBAL.search(str(error))
        if found:
            name = found.group(1)
            module, _, attribute = name.rpartition(".")
            known = f" ({_KNOWN_AS[module]}.{attribute})" if module in _KNOWN_AS else ""
            raise DeepleakError(f"refused {what} {path}: it holds the Python object {name}{known}, not only tensors; "
                                "deepleak reads tensors only and runs no code from a file") from None
        raise DeepleakError(f"cannot read {what} {path} as a torch file of tensors ({_unpickler_detail(str(error))})") from None
    except Exception as error:  # not a torch file at all: a zip or pickle error of any type
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DeepleakError(f"cannot read {what} {path} as a torch file of tensors "
                            f"({type(error).__name__}{': ' + reason if reason else ''})") from None


def _unpickler_detail(message: str) -> str:
    """The unpickler's own reason from torch's error text, without its advice."""
    _, marker, rest = message.partition("WeightsUnpickler error:")
    if not marker:
        return "not a pickle of tensors"
    detail = " ".join(rest.split("Check the documentation")[0].split())
    return f"not a pickle of tensors: {detail}" if detail else "not a pickle of tensors"
