"""Attacks: reconstruct the private images from an Observation and restored labels."""

from deepleak.attacks.dlg import DLG
from deepleak.attacks.gradient_matching import GradientMatching
from deepleak.attacks.parts.group import GroupConsistency
from deepleak.attacks.result import Reconstruction

__all__ = ["DLG", "GradientMatching", "GroupConsistency", "Reconstruction"]
