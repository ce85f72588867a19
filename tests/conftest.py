import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(items):
    """Every test that runs the real CLI (the ``deepleak`` fixture) or lives in tests/e2e is
    marked ``e2e``, so ``-m 'not e2e'`` gives the in-process suite alone."""
    for item in items:
        if "deepleak" in getattr(item, "fixturenames", ()) or "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use one torch thread: on a 2-core machine shared with other processes,
    oversubscribed torch threads run small models many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def deepleak(tmp_path):
    """Run the real CLI in a subprocess inside tmp_path; returns CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch_home"))
        return subprocess.run(
            [sys.executable, "-m", "deepleak.cli", *args],
            cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )

    return run


@pytest.fixture
def compose():
    """Compose deepleak's config through Hydra's compose API, with the CLI's one rewrite of
    the overrides (``+scenario=fedavg`` -> ``scenario=fedavg``), without running Hydra."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from deepleak.config import chosen_group_appends, config_dir, register

    register()

    def run(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return hydra_compose(config_name="config", overrides=chosen_group_appends(list(overrides)))

    yield run
    GlobalHydra.instance().clear()
