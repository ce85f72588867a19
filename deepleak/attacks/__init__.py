"""Attacks: reconstruct the private images from an Observation and restored labels."""

from deepleak.attacks.inversion import GradientInversion, Reconstruction

__all__ = ["GradientInversion", "Reconstruction"]
