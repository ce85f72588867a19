"""Shared by the task tests: composing ``conf/train.yaml`` as ``deepleak train`` does."""

import pytest
from hydra.core.global_hydra import GlobalHydra

from victims import compose_train


@pytest.fixture
def train_cfg():
    """Compose conf/train.yaml as the train command would, without running Hydra."""
    yield compose_train
    GlobalHydra.instance().clear()
