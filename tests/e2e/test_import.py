"""``deepleak attack +scenario=imported scenario.path=DIR`` as an auditor runs it: a client
written in plain PyTorch, with its own model class (importable from PYTHONPATH, not shipped
with deepleak), its own normalisation and its own images, shares a gradient (.pt) and a
FedAvg update (.npz in state_dict order); deepleak attacks both. Refusals are one line."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from deepleak.data import SampleDataset

from crafted import noise_floor_psnr
from imported_client import edit_manifest, write_client

CLIENT_NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    """The client's own model: two sigmoid convs and a linear head, PyTorch's default init."""

    def __init__(self, classes=10, width=16, side=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.Sigmoid(),
            nn.Conv2d(width, width, 5, stride=1, padding=2), nn.Sigmoid(),
            nn.Flatten(),
        )
        self.head = nn.Linear(width * (side // 2) ** 2, classes)

    def forward(self, x):
        return self.head(self.features(x))
'''
NORMALIZATION = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
ENTRY = {"_target_": "clientnets.Net", "classes": 10, "width": 16, "side": 16}


def run_dir(root: Path) -> Path:
    (found,) = sorted(p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir())
    return found


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("deepleak: error: ")
    assert "weights_only=False" not in result.stderr
    return lines[0]


@pytest.fixture
def client_nets(tmp_path, monkeypatch):
    """The client's model module, on PYTHONPATH for the CLI and on sys.path here."""
    folder = tmp_path / "client_code"
    folder.mkdir()
    (folder / "clientnets.py").write_text(CLIENT_NETS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(folder))
    import importlib
    import sys

    yield importlib.import_module("clientnets")
    sys.modules.pop("clientnets", None)


def client_images(count: int) -> tuple[torch.Tensor, list[int]]:
    """The client's own photos: crops of distinct classes, 16 px."""
    data = SampleDataset(num_classes=10, resolution=16, crops_per_class=4)
    images, labels = data.batch([4 * c + 1 for c in range(count)])
    return images, labels.tolist()


def test_a_plain_pytorch_clients_gradient_is_attacked(deepleak, tmp_path, client_nets):
    torch.manual_seed(0)
    images, labels = client_images(2)
    root = write_client(tmp_path / "update", kind="gradient", model=client_nets.Net(), model_entry=ENTRY,
                        images=images, labels=labels, normalization=NORMALIZATION)
    result = deepleak("attack", "+scenario=imported", f"scenario.path={root}", "attack.iterations=20")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    trial = metrics["per_trial"][0]
    assert metrics["scenario"] == "imported" and metrics["scored"] is True and trial["scored"] is True
    assert metrics["dataset"] == f"imported:{root.resolve()}"
    assert metrics["num_classes"] == 10 and metrics["image_shape"] == [3, 16, 16] and metrics["batch_size"] == 2
    assert trial["restored_labels"] == sorted(labels) and trial["label_accuracy"] == 1.0
    # measured 70.7 dB after 20 steps; the floor is 13.7 dB (the sample set's mean image)
    assert noise_floor_psnr(images) + 10 <= 30
    assert trial["psnr_mean"] >= 30, trial["psnr"]
    assert metrics["update_regeneration"]["cosine"] > 0.9999
    threat = metrics["threat_model"]
    assert threat["client"] == "imported" and threat["update"] == "gradient"
    assert threat["normalization"] == {"mean": NORMALIZATION[0], "std": NORMALIZATION[1]}
    assert threat["truth_for_scoring"] is True
    print(f"plain-PyTorch gradient: labels {trial['restored_labels']} (true {sorted(labels)}), "
          f"PSNR {trial['psnr']} mean {trial['psnr_mean']:.2f} dB, regeneration cosine "
          f"{metrics['update_regeneration']['cosine']:.6f}")


def test_a_plain_pytorch_clients_fedavg_update_is_attacked(deepleak, tmp_path, client_nets):
    torch.manual_seed(1)
    images, labels = client_images(2)
    root = write_client(tmp_path / "update", kind="weights", model=client_nets.Net(), model_entry=ENTRY,
                        images=images, labels=labels, normalization=NORMALIZATION, suffix=".npz",
                        local_batch_size=1, local_epochs=2, lr=0.01)
    result = deepleak("attack", "+scenario=imported", f"scenario.path={root}", "attack.iterations=5")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    trial = metrics["per_trial"][0]
    assert metrics["scored"] is True and trial["scored"] is True and trial["psnr_mean"] is not None
    assert trial["local_steps"] == 4
    regeneration = metrics["update_regeneration"]
    assert regeneration["cosine"] >= 0.99 and "best of 4 batch orders" in regeneration["order"]
    assert metrics["threat_model"]["update"] == "weights"
    assert metrics["threat_model"]["recipe_known"]["local_epochs"] == 2
    print(f"plain-PyTorch FedAvg: labels {trial['restored_labels']} (true {sorted(labels)}), PSNR "
          f"{trial['psnr_mean']:.2f} dB after 5 steps, regeneration cosine {regeneration['cosine']:.6f}")
    # The FedAvg label method and replay attack run on it unchanged.
    result = deepleak("attack", "+scenario=imported", f"scenario.path={root}", "labels=fedavg_fitted_search",
                      "attack=fedavg_replay", "attack.iterations=2", "attack.assignment_iterations=2", cwd=root)
    assert result.returncode == 0, result.stderr
    (replayed,) = sorted(p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir())
    trial = json.loads((replayed / "metrics.json").read_text())["per_trial"][0]
    assert trial["restored_labels"] == sorted(labels) and trial["psnr_mean"] is not None


def test_without_truth_the_run_is_unscored(deepleak, tmp_path):
    root = write_client(tmp_path / "update", truth=False)
    result = deepleak("attack", "scenario=imported", f"scenario.path={root}", "attack.iterations=2")
    assert result.returncode == 0, result.stderr
    folder = run_dir(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    trial = metrics["per_trial"][0]
    assert metrics["scored"] is False and trial["scored"] is False
    assert "update_regeneration" not in metrics
    assert not [key for key in json.dumps(metrics).split('"') if "psnr" in key or "ssim" in key]
    assert "true_labels" not in trial and "label_accuracy" not in trial
    assert len(trial["restored_labels"]) == 2 and len(trial["image_labels"]) == 2
    assert trial["gradient_distance"] > 0 and trial["iterations"] == 2
    assert trial["images"] == ["images/trial_000/rec_00.png", "images/trial_000/rec_01.png"]
    assert {p.name for p in (folder / "images" / "trial_000").iterdir()} == {"grid.png", "rec_00.png", "rec_01.png"}
    assert metrics["threat_model"]["truth_for_scoring"] is False
    assert "unscored: no truth" in (folder / "attack.log").read_text()


def test_a_mismatched_state_dict_is_refused_in_one_line(deepleak, tmp_path):
    root = write_client(tmp_path / "update")
    state = torch.load(root / "global.pt")
    state["body.0.weight"] = state["body.0.weight"][:, :1]
    torch.save(state, root / "global.pt")
    line = one_line_error(deepleak("attack", "+scenario=imported", f"scenario.path={root}"))
    assert "'body.0.weight' has shape [6, 1, 5, 5], the model LeNet's has [6, 3, 5, 5]" in line
    assert not (tmp_path / "outputs" / "runs").exists() or not list((tmp_path / "outputs" / "runs").glob("*/*/metrics.json"))


def test_a_missing_key_and_a_missing_file_are_refused_in_one_line(deepleak, tmp_path):
    root = edit_manifest(write_client(tmp_path / "update", kind="weights"), lr=None)
    assert "missing required key 'lr' (kind: weights)" in one_line_error(
        deepleak("attack", "+scenario=imported", f"scenario.path={root}"))
    (root / "client.pt").unlink()
    edit_manifest(root, lr=0.05)
    assert f"missing file {root / 'client.pt'}" in one_line_error(
        deepleak("attack", "+scenario=imported", f"scenario.path={root}"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_a_pickled_os_system_update_is_refused_in_one_line(deepleak, tmp_path):
    root = write_client(tmp_path / "update")
    torch.save({"body.0.weight": torch.zeros(1), "x": Evil()}, root / "gradient.pt")
    line = one_line_error(deepleak("attack", "+scenario=imported", f"scenario.path={root}"))
    assert f"refused gradient file {root / 'gradient.pt'}: it holds the Python object posix.system (os.system)" in line


def test_a_model_checkpoint_pickling_os_system_is_refused_in_one_line(deepleak, tmp_path):
    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    line = one_line_error(deepleak("attack", f"model.checkpoint={tmp_path / 'evil.pt'}", "attack=none"))
    assert "refused model checkpoint" in line and "os.system" in line and "reads tensors only" in line


def test_the_threat_model_of_simulated_runs(deepleak, tmp_path):
    result = deepleak("attack", "attack=none", "batch_size=2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["scored"] is True and metrics["per_trial"][0]["scored"] is True
    assert metrics["threat_model"] == {
        "client": "simulated",
        "update": "gradient",
        "global_model_known": True,
        "recipe_known": {"num_examples": 2, "bn_mode": "train", "loss": "mean cross-entropy", "num_classes": 10,
                         "image_shape": [3, 32, 32]},
        "normalization": None,
        "batch_norm": {"in_model": False, "buffers_shared": False},
        "step_labels_leaked": False,
        "snapshots_shared": False,
        "snapshots": 0,
        "defence": {"name": "none"},
        "truth_for_scoring": True,
    }
    cwd = tmp_path / "fedavg"
    cwd.mkdir()
    result = deepleak("attack", "+scenario=fedavg", "scenario.leak_metadata=true", "attack=none", "batch_size=4",
                      "labels=fedavg_mean", cwd=cwd)
    assert result.returncode == 0, result.stderr
    threat = json.loads((run_dir(cwd) / "metrics.json").read_text())["threat_model"]
    assert threat["update"] == "weights" and threat["client"] == "simulated"
    assert threat["step_labels_leaked"] is True and threat["snapshots_shared"] is False
    lr = yaml.safe_load((run_dir(cwd) / ".hydra" / "config.yaml").read_text())["scenario"]["lr"]  # the default's
    assert threat["recipe_known"] == {"num_examples": 4, "local_batch_size": 2, "local_epochs": 2, "lr": lr,
                                      "bn_mode": "train", "loss": "mean cross-entropy", "num_classes": 10,
                                      "image_shape": [3, 32, 32]}
    assert threat["defence"] == {"name": "none"} and threat["truth_for_scoring"] is True
