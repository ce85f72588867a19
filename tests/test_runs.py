"""Run dirs never collide; status and metrics are written whole."""

import json
import math
import os
import subprocess
import sys
from datetime import datetime

import numpy as np
import torch

from deepleak import runs


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5, 678901)


def test_same_microsecond_gets_a_second_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "datetime", FrozenClock)
    first = runs.unique_dir(str(tmp_path))
    second = runs.unique_dir(str(tmp_path))
    assert first.endswith("2026-01-02/03-04-05-678901")
    assert second == first + "-1"
    assert os.path.isdir(first) and os.path.isdir(second)


def test_two_processes_started_together_write_two_dirs(tmp_path):
    code = "from deepleak.runs import unique_dir; print(unique_dir('out'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    dirs = [p.communicate()[0].strip() for p in procs]
    assert len(set(dirs)) == 4


def test_metrics_are_json_safe(tmp_path):
    path = runs.write_metrics(tmp_path, {"a": torch.tensor([1.5, 2.0]), "b": np.float32(3), "c": math.inf, "d": [np.int64(4)]})
    assert json.loads(path.read_text()) == {"a": [1.5, 2.0], "b": 3.0, "c": None, "d": [4]}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_status_and_reason(tmp_path):
    runs.set_status(tmp_path, "running")
    assert runs.read_status(tmp_path) == "running"
    runs.set_status(tmp_path, "failed", "bad thing\nsecond line")
    assert runs.read_status(tmp_path) == "failed"
    assert (tmp_path / "error.txt").read_text() == "bad thing second line\n"


def test_a_resume_says_why_a_job_is_not_complete(tmp_path):
    """resume=true skips a job only when it is done with every trial this run asks for; the
    reason it gives otherwise is what the log says when it moves the earlier attempt aside."""
    assert runs.incomplete_reason(tmp_path, 4) == "never started"
    runs.set_status(tmp_path, "interrupted")
    assert runs.incomplete_reason(tmp_path, 4) == "marked interrupted"
    runs.set_status(tmp_path, "done")
    assert runs.incomplete_reason(tmp_path, 4) == "no metrics"
    (tmp_path / "metrics.json").write_text("{")
    assert runs.incomplete_reason(tmp_path, 4) == "unreadable metrics"
    runs.write_metrics(tmp_path, {"trials_done": 10})
    assert runs.incomplete_reason(tmp_path, 4) == "it holds 10 trials, this run asks for 4"
    assert runs.incomplete_reason(tmp_path, 10) is None


def test_image_grid_and_png_match_torchvision(tmp_path):
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    from deepleak.runs import image_grid, save_png

    images = torch.rand(5, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    grid = image_grid(images, columns=3)
    assert torch.equal(grid, torchvision.utils.make_grid(images, nrow=3, padding=2, pad_value=1.0))
    save_png(grid, tmp_path / "ours.png")
    torchvision.utils.save_image(images, tmp_path / "theirs.png", nrow=3, padding=2, pad_value=1.0)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ours.png")), np.asarray(Image.open(tmp_path / "theirs.png")))


def test_the_default_run_path_does_not_import_torchvision():
    """torchvision costs ~1.4 s of start-up here; only CIFAR-10, ImageNet and LPIPS need it."""
    import subprocess
    import sys

    code = ("import sys, deepleak.tasks.attack, deepleak.data, deepleak.cli; deepleak.data.SampleDataset; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
