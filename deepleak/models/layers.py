"""Pieces shared by the victim models: activations by name and weight initialisers."""

from __future__ import annotations

from torch import nn

from deepleak.errors import DeepleakError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise DeepleakError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def init_uniform(model: nn.Module, scale: float) -> None:
    """Re-draw every weight and bias from U(-scale, scale), as DLG does for its LeNet."""
    for parameter in model.parameters():
        nn.init.uniform_(parameter, -scale, scale)
