"""Trained victims for tests: ``conf/train.yaml`` composed as ``deepleak train`` does, and a
training run into a folder (its checkpoint.pt and metrics.json)."""

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deepleak.config import config_dir, register
from deepleak.config.train import register_train


def compose_train(*overrides: str):
    """conf/train.yaml with ``overrides``, composed without running Hydra."""
    register()
    register_train()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def train_victim(folder: Path, *overrides: str):
    """Run ``deepleak train overrides`` into ``folder`` on one thread; returns the config."""
    from deepleak.tasks import train

    cfg = compose_train(*overrides)
    torch.set_num_threads(1)
    train.run(cfg, folder)
    return cfg
