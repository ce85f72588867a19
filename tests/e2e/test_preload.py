"""torch's one-time optimiser import (torch._dynamo, about 1.2 s here) is paid before the
attack's clock and budget start, not inside the first restart."""

import json
import os
import subprocess
import sys

SPY = """
import sys
from deepleak.attacks import gradient_matching
seen = []
original = gradient_matching.GradientMatching.reconstruct
def spy(self, *args, **kwargs):
    seen.append("torch._dynamo" in sys.modules)
    return original(self, *args, **kwargs)
gradient_matching.GradientMatching.reconstruct = spy
from deepleak.cli import main
main(["attack", "attack.iterations=1", "save_images=false"])
print("SEEN", seen)
"""


def test_dynamo_is_imported_before_the_attack_starts(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch_home"))
    result = subprocess.run([sys.executable, "-c", SPY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SEEN [True]" in result.stdout
    (metrics_file,) = tmp_path.glob("outputs/runs/*/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["preload_seconds"] > 0
