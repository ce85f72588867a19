"""export_update=true: a simulated client's update written in the import format (issue 23)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deepleak.models import build_model
from deepleak.scenarios import FedAvg, FedSGD, PrivateBatch
from deepleak.scenarios.export import export_update

LENET = {"_target_": "deepleak.models.LeNet", "width": 8, "activation_fn": "sigmoid", "init_scale": 0.5,
         "checkpoint": None}
CONVNET = {"_target_": "deepleak.models.ConvNet", "width": 2, "activation_fn": "relu", "checkpoint": None}
COMMON = {"kind", "model", "num_classes", "image_shape", "global", "num_examples", "bn_mode", "truth"}


def _batch(n, classes=10, shape=(3, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    # 8-bit pixels, so the truth PNGs hold the batch exactly
    images = torch.randint(256, (n, *shape), generator=g).float() / 255
    return PrivateBatch(images, torch.randint(classes, (n,), generator=g))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_common(folder, manifest, model, batch, option):
    assert manifest["model"] == {**{k: v for k, v in option.items() if k != "checkpoint"},
                                 "num_classes": 10, "image_shape": list(batch.images.shape[1:])}
    assert manifest["num_classes"] == 10
    assert manifest["image_shape"] == list(batch.images.shape[1:])
    assert manifest["num_examples"] == len(batch)
    assert "normalization" not in manifest  # identity: deepleak's models take pixels in [0, 1]
    assert manifest["global"] == "global.pt"
    state = _load(folder / "global.pt")
    assert list(state) == list(model.state_dict())  # W_0, buffers included, in state_dict order
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor)
    assert manifest["truth"] == {"images": "truth/", "labels": batch.labels.tolist()}
    pngs = sorted((folder / "truth").iterdir())
    assert [p.name for p in pngs] == [f"{i:03d}.png" for i in range(len(batch))]
    for png, image in zip(pngs, batch.images):
        with Image.open(png) as opened:
            assert opened.format == "PNG" and opened.mode == "RGB"
            pixels = torch.from_numpy(np.asarray(opened).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(pixels, image)  # lossless, in the batch order of truth.labels


@pytest.mark.parametrize("option", [LENET, CONVNET], ids=["lenet", "convnet-bn"])
def test_fedsgd_export(tmp_path, option):
    batch = _batch(2)
    model = build_model(option, 10, (3, 16, 16), seed=1)
    observation = FedSGD().observe(model, batch, 10)
    export_update(tmp_path, observation, option, truth=batch)
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert set(manifest) == COMMON | {"gradient"}
    assert manifest["kind"] == "gradient" and manifest["gradient"] == "gradient.pt"
    assert manifest["bn_mode"] == "train"
    _check_common(tmp_path, manifest, model, batch, option)
    gradient = _load(tmp_path / "gradient.pt")
    names = [name for name, _ in model.named_parameters()]
    assert list(gradient) == names
    for name, shared in zip(names, observation.gradient):
        assert torch.equal(gradient[name], shared)
    assert not (tmp_path / "client.pt").exists()


@pytest.mark.parametrize("option", [LENET, CONVNET], ids=["lenet", "convnet-bn"])
def test_fedavg_export(tmp_path, option):
    batch = _batch(4)
    model = build_model(option, 10, (3, 16, 16), seed=1)
    observation = FedAvg(local_batch_size=2, epochs=3, lr=0.05, bn_mode="eval").observe(model, batch, 10, trial=0)
    export_update(tmp_path, observation, option, truth=batch)
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert set(manifest) == COMMON | {"update", "local_batch_size", "local_epochs", "lr"}
    assert manifest["kind"] == "weights" and manifest["update"] == "client.pt"
    assert (manifest["local_batch_size"], manifest["local_epochs"], manifest["lr"]) == (2, 3, 0.05)
    assert manifest["bn_mode"] == "eval"
    _check_common(tmp_path, manifest, model, batch, option)
    client = _load(tmp_path / "client.pt")
    names = [name for name, _ in model.named_parameters()]
    assert list(client) == names  # W_T's parameters; the Observation carries no client BN statistics
    for name, shared in zip(names, observation.weights):
        assert torch.equal(client[name], shared)
    assert not (tmp_path / "gradient.pt").exists()


def test_export_without_truth_and_grey_images(tmp_path):
    batch = _batch(1, shape=(1, 12, 12))
    model = build_model(LENET, 10, (1, 12, 12), seed=0)
    export_update(tmp_path / "a", FedSGD().observe(model, batch, 10), LENET)
    manifest = yaml.safe_load((tmp_path / "a" / "manifest.yaml").read_text())
    assert "truth" not in manifest and not (tmp_path / "a" / "truth").exists()
    export_update(tmp_path / "b", FedSGD().observe(model, batch, 10), LENET, truth=batch)
    with Image.open(tmp_path / "b" / "truth" / "000.png") as opened:
        assert opened.mode == "L"
        assert torch.equal(torch.from_numpy(np.asarray(opened).copy()).float() / 255, batch.images[0, 0])


def test_leaked_metadata_is_not_exported(tmp_path, caplog):
    batch = _batch(2)
    model = build_model(LENET, 10, (3, 16, 16), seed=0)
    observation = FedAvg(local_batch_size=1, epochs=1, lr=0.01, leak_metadata=True).observe(model, batch, 10)
    export_update(tmp_path, observation, LENET, truth=batch)
    assert "step_labels" in caplog.text
    assert "step_labels" not in (tmp_path / "manifest.yaml").read_text()


def test_cli_export(deepleak, tmp_path):
    """The CLI writes one update dir per trial with the top-level switch, and none without it.
    (Each scenario's manifest kind is checked by tests/e2e/test_round_trip.py.)"""
    small = ("attack=none", "model.width=8", "dataset.resolution=16", "save_images=false", "export_update=true",
             "trials=2")
    result = deepleak("attack", *small, "batch_size=2", "hydra.run.dir=run_on")
    assert result.returncode == 0, result.stderr[-2000:]
    for trial in ("trial_000", "trial_001"):
        manifest = yaml.safe_load((tmp_path / "run_on" / "update" / trial / "manifest.yaml").read_text())
        assert manifest["kind"] == "gradient"
        assert manifest["num_examples"] == 2 and len(manifest["truth"]["labels"]) == 2
    result = deepleak("attack", *small[:-2], "hydra.run.dir=run_off")
    assert result.returncode == 0 and not (tmp_path / "run_off" / "update").exists()


def test_an_imported_update_is_not_exported(tmp_path):
    from dataclasses import replace

    from deepleak.errors import DeepleakError

    batch = _batch(1)
    model = build_model(LENET, 10, (3, 16, 16), seed=0)
    observation = replace(FedSGD().observe(model, batch, 10), scenario="imported")
    with pytest.raises(DeepleakError, match="already in the import format"):
        export_update(tmp_path / "x", observation, LENET)
    assert not (tmp_path / "x").exists()
