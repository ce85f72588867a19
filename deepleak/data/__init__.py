"""Data sets (images in [0, 1], no normalisation) and label distributions of the private batch."""

from deepleak.data.distributions import (
    DISTRIBUTIONS,
    Dirichlet,
    Distribution,
    EveryClassR,
    OneClass,
    OneClassR,
    Random,
    RepeatedImage,
    Unique,
)
from deepleak.data.sample import SampleDataset


def __getattr__(name: str):
    """CIFAR10 and ImageNet on first use: they import torchvision (about 1.4 s here), which
    the embedded sample set does not need."""
    if name == "CIFAR10":
        from deepleak.data.cifar10 import CIFAR10

        return CIFAR10
    if name == "ImageNet":
        from deepleak.data.imagenet import ImageNet

        return ImageNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CIFAR10",
    "ImageNet",
    "SampleDataset",
    "DISTRIBUTIONS",
    "Distribution",
    "Random",
    "Unique",
    "OneClass",
    "OneClassR",
    "RepeatedImage",
    "EveryClassR",
    "Dirichlet",
]
