"""Attacks: reconstruct the private images from an Observation and restored labels."""

from deepleak.attacks.dlg import DLG
from deepleak.attacks.group import GroupConsistency
from deepleak.attacks.inversion import GradientInversion, Reconstruction

__all__ = ["DLG", "GradientInversion", "GroupConsistency", "Reconstruction"]
