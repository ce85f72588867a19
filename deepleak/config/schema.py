"""The attack's structured-config schema and the resolvers its YAML uses.

The schema types the top-level values (``batch_size=abc`` fails at start); the group
options (dataset, model, ...) are ``_target_`` nodes whose constructors are their schema
(:func:`deepleak.config.checks.check_types`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from deepleak.runs import unique_dir


@dataclass
class DeepleakConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    scenario: Any = MISSING
    labels: Any = MISSING
    attack: Any = MISSING
    distribution: Any = MISSING
    defence: Any = MISSING
    batch_size: int = 4
    wrong_labels: int = 0
    seed: int = 0
    trials: int = 1
    first_trial: int = 0
    device: str = "auto"
    save_images: bool = True
    export_update: bool = False
    resume: bool = False
    threads: int = 0
    scale: str = "cpu"


def register() -> None:
    """Register the schema and the resolvers; idempotent."""
    ConfigStore.instance().store(name="deepleak_schema", node=DeepleakConfig)
    if not OmegaConf.has_resolver("scaled"):
        OmegaConf.register_new_resolver("scaled", scaled)
    if not OmegaConf.has_resolver("deepleak_unique_dir"):
        # use_cache: one config resolves to one dir, however often it is read.
        OmegaConf.register_new_resolver("deepleak_unique_dir", unique_dir, use_cache=True)


def config_dir() -> Path:
    """The top-level conf/ folder (packaged as deepleak_conf when installed)."""
    import deepleak_conf  # noqa: PLC0415  (a package only to ship the YAML files)

    return Path(deepleak_conf.__file__).parent


SCALES = ("cpu", "paper", "smoke")
_CPU_VALUE = object()  # no smoke value given: smoke takes the CPU value


def scaled(cpu: Any, paper: Any, smoke: Any = _CPU_VALUE, *, _root_: Any) -> Any:
    """``${scaled:CPU,PAPER[,SMOKE]}``: experiment presets carry their sizes per scale; the
    top-level ``scale=cpu|paper|smoke`` picks one. Paper-scale settings are meant for a GPU;
    smoke runs a preset end to end in seconds (a check that it runs, not a result) and falls
    back to the CPU value where a preset gives no third value."""
    from deepleak.errors import DeepleakError  # noqa: PLC0415

    scale = _root_.get("scale", "cpu")
    if scale not in SCALES:
        raise DeepleakError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale == "smoke":
        return cpu if smoke is _CPU_VALUE else smoke
    return paper if scale == "paper" else cpu


