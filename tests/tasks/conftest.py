"""Shared by the task tests: composing ``conf/train.yaml`` as ``deepleak train`` does."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deepleak.config import config_dir, register
from deepleak.config.train import register_train

@pytest.fixture
def train_cfg():
    """Compose conf/train.yaml as the train command would, without running Hydra."""
    register()
    register_train()

    def run(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(config_name="train", overrides=list(overrides))

    yield run
    GlobalHydra.instance().clear()
