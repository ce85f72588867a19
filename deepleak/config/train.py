"""The structured-config schema of ``deepleak train`` (the primary config is conf/train.yaml).

Like the attack's schema it types the top-level values (``epochs=abc`` fails at start);
the dataset, model and optimizer groups are ``_target_`` nodes checked against their
constructors by :func:`deepleak.config.check_types`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    defence: Any = MISSING
    epochs: int = 20
    checkpoint_epochs: list[int] = field(default_factory=list)
    batch_size: int = 32
    holdout: float = 0.2
    precise_bn: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int = 0


def register_train() -> None:
    """Register the train schema as ``deepleak_train_schema``; idempotent."""
    ConfigStore.instance().store(name="deepleak_train_schema", node=TrainConfig)
