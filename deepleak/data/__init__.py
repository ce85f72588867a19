"""Data sets (images in [0, 1], no normalisation) and label distributions of the private batch."""

from deepleak.data.cifar10 import CIFAR10
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
from deepleak.data.imagenet import ImageNet
from deepleak.data.sample import SampleDataset

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
