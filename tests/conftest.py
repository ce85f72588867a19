import os
import subprocess
import sys
from pathlib import Path

import pytest


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
