"""ImageNet end to end through the CLI on a tiny ImageFolder tree: 64, 128 and 224 px, the
ImageNet-layout ResNet-18, zero-shot labels and the default attack."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    """root/val/<wnid>/*.JPEG: 3 classes of 2 non-square photos-like images each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    for c, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
        folder = root / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(2):
            # Smooth colour gradients plus noise: JPEG-friendly, different per image.
            h, w = 90 + 10 * i, 120 + 7 * c
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([(xx * (c + 1)) % 256, (yy * (i + 2)) % 256, (xx + yy) % 256], axis=-1)
            pixels = np.clip(base + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{c}{i}.JPEG")
    return root


def run_one(deepleak, tmp_path, root, resolution, iterations, *extra):
    result = deepleak("attack", "dataset=imagenet", f"dataset.root={root}", f"dataset.resolution={resolution}",
                      "model=resnet18_imagenet", "batch_size=1", f"attack.iterations={iterations}", *extra)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "ImageNet" and metrics["num_classes"] == 3
    assert metrics["image_shape"] == [3, resolution, resolution]
    trial = metrics["per_trial"][0]
    assert trial["iterations"] == iterations and trial["evaluations"] > iterations
    assert trial["label_accuracy"] == 1.0  # zero-shot on a batch of one
    assert math.isfinite(trial["psnr_mean"]) and math.isfinite(trial["gradient_distance"])
    with Image.open(run_dir / "images" / "trial_000" / "rec_00.png") as png:
        assert png.size == (resolution, resolution)
    return trial


def test_imagenet_end_to_end_full_width_at_64_px(deepleak, tmp_path, tiny_imagenet):
    """README's `dataset=imagenet dataset.resolution=64` with `model=resnet18_imagenet` as users
    type it (full width), one step (measured 20 s on a busy 2-core machine, 7.5 s of it the
    step): the fast suite's version of the slow test below."""
    run_one(deepleak, tmp_path, tiny_imagenet, 64, 1)


# Width 8 keeps the layout (stem, max-pool, 2-2-2-2 basic blocks) at a fraction of the cost
# at the larger sides: the full-width network took 28 s at 224 px here (the slow test below).
@pytest.mark.parametrize("resolution, iterations", [(128, 1), (224, 1)])
def test_imagenet_end_to_end(deepleak, tmp_path, tiny_imagenet, resolution, iterations):
    run_one(deepleak, tmp_path, tiny_imagenet, resolution, iterations, "model.width=8")


@pytest.mark.slow
@pytest.mark.parametrize("resolution, iterations", [(64, 2), (224, 1)])
def test_imagenet_end_to_end_full_width(deepleak, tmp_path, tiny_imagenet, resolution, iterations):
    """The command as users type it: the full-width ResNet-18."""
    run_one(deepleak, tmp_path, tiny_imagenet, resolution, iterations)
