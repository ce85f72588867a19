"""`+scenario=fedavg` through the task code and the CLI (issue 4)."""

import json
import math
from pathlib import Path

import pytest
import torch

from deepleak.errors import DeepleakError
from deepleak.tasks.attack import run, validate

SMALL = ("+scenario=fedavg", "model.width=8", "dataset.resolution=16", "save_images=false")



def test_labels_only_records_recipe_and_leak_switches(compose, tmp_path):
    cfg = compose(*SMALL, "attack=none", "batch_size=6", "scenario.local_batch_size=4", "trials=2")
    result = run(cfg, tmp_path)
    assert result["scenario"] == "fedavg"
    assert result["metadata_leaked"] == {"step_labels": False, "snapshot_every": 0}
    assert [t["local_steps"] for t in result["per_trial"]] == [4, 4]  # 2 epochs x ceil(6 / 4)
    assert all(len(t["restored_labels"]) == 6 for t in result["per_trial"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metadata_leaked"] == {"step_labels": False, "snapshot_every": 0}


def test_first_trial_reruns_the_same_trials(compose, tmp_path, monkeypatch):
    """first_trial splits one setting's trials over jobs: trial 1 run alone is trial 1 of a
    two-trial run (same private batch, model, shuffle order, shared weights and labels)."""
    from deepleak.scenarios import FedAvg

    shared = []
    original = FedAvg.observe

    def spy(self, *args, **kwargs):
        observation = original(self, *args, **kwargs)
        shared.append(torch.cat([w.flatten() for w in observation.weights]))
        return observation

    monkeypatch.setattr(FedAvg, "observe", spy)
    small = (*SMALL, "attack=none", "batch_size=6", "scenario.local_batch_size=2", "scenario.lr=0.1")
    both = run(compose(*small, "trials=2"), tmp_path / "a")
    second = run(compose(*small, "first_trial=1"), tmp_path / "b")
    assert second["first_trial"] == 1 and [t["trial"] for t in second["per_trial"]] == [1]
    assert second["per_trial"][0]["seeds"] == both["per_trial"][1]["seeds"]
    for key in ("indices", "true_labels", "restored_labels"):  # arrays or lists
        assert list(second["per_trial"][0][key]) == list(both["per_trial"][1][key])
    assert torch.equal(shared[2], shared[1])  # the client trained in the same order
    # A different shuffle of the same batch and model shares different weights: the check bites.
    again = FedAvg(local_batch_size=2, epochs=2, lr=0.1, seed=0)
    cfg = compose(*small)
    from deepleak.config import make
    from deepleak.models import build_model
    from deepleak.scenarios import PrivateBatch
    from deepleak.runtime import trial_seeds
    data = make(cfg.dataset)
    images, labels = data.batch(both["per_trial"][1]["indices"])
    model = build_model(cfg.model, data.num_classes, tuple(data.image_shape), trial_seeds(0, 1)["model"])
    other = again.observe(model, PrivateBatch(images, labels), data.num_classes, trial=0)
    assert not torch.equal(torch.cat([w.flatten() for w in other.weights]), shared[1])
    with pytest.raises(DeepleakError, match="first_trial must be >= 0"):
        validate(compose(*SMALL, "first_trial=-1"))


@pytest.mark.parametrize("mode, assignment", [("shared", "random"), ("shared", "learned"), ("per_epoch", "random")])
def test_replay_route_records_per_epoch_agreement(compose, tmp_path, mode, assignment):
    cfg = compose(*SMALL, "attack=fedavg_replay", "attack.iterations=2", "attack.optimizer.max_iter=3",
                  f"attack.mode={mode}", f"attack.assignment={assignment}", "attack.assignment_iterations=2",
                  "labels=oracle")
    result = run(cfg, tmp_path)
    trial = result["per_trial"][0]
    assert result["oracle_labels"] is True  # labels=oracle: the task revealed the truth to it
    saved = json.loads((tmp_path / "metrics.json").read_text())["per_trial"][0]
    assert saved["replay_assignment"] == assignment
    assert len(saved["replay_schedule"]) == 4  # N 4, B 2, E 2: T = 4 steps of dummy indices
    assert (saved["relaxed_distance"] is not None) == (assignment == "learned")
    assert len(trial["epoch_psnr"]) == 2 and len(trial["epoch_agreement"]) == 2
    assert all(p > 5 for p in trial["epoch_psnr"])
    assert trial["psnr_mean"] > 5 and trial["gradient_distance"] >= 0
    if mode == "shared":
        assert trial["epoch_psnr"][0] == pytest.approx(trial["psnr_mean"], abs=1e-6)
        assert all(math.isinf(a) for a in trial["epoch_agreement"])  # identical copies (null in metrics.json)


def test_snapshots_route(compose, tmp_path):
    cfg = compose(*SMALL, "attack=fedavg_snapshots", "attack.iterations=2", "scenario.snapshot_every=2",
                  "scenario.leak_metadata=true")
    result = run(cfg, tmp_path)
    assert result["metadata_leaked"] == {"step_labels": True, "snapshot_every": 2}
    assert result["per_trial"][0]["psnr_mean"] > 5
    with pytest.raises(DeepleakError, match="snapshot_every"):
        run(compose(*SMALL, "attack=fedavg_snapshots", "attack.iterations=1"), tmp_path / "other")


def test_local_batch_larger_than_n_fails_at_start(compose):
    with pytest.raises(DeepleakError, match="scenario.local_batch_size"):
        validate(compose("+scenario=fedavg", "batch_size=2", "scenario.local_batch_size=4"))


def test_fedsgd_still_default(compose):
    assert compose()["scenario"]["_target_"] == "deepleak.scenarios.FedSGD"


@pytest.mark.slow
def test_cli_default_fedavg_run(deepleak, tmp_path):
    """`deepleak attack +scenario=fedavg` with no other argument (measured ~60 s on 2 cores)."""
    result = deepleak("attack", "+scenario=fedavg", timeout=180)
    assert result.returncode == 0, result.stderr
    (metrics_file,) = Path(tmp_path, "outputs", "runs").glob("*/*/metrics.json")
    summary = json.loads(metrics_file.read_text())["summary"]
    assert summary["label_accuracy"]["mean"] == 1.0
    assert summary["psnr_mean"]["mean"] > 25


@pytest.mark.slow
def test_cli_sweep_fedsgd_fedavg(deepleak, tmp_path):
    result = deepleak("attack", "-m", "+scenario=fedsgd,fedavg", "batch_size=4,8", "attack=none", timeout=300)
    assert result.returncode == 0, result.stderr
    statuses = sorted(p.read_text().strip() for p in Path(tmp_path, "outputs", "multirun").glob("*/*/*/status"))
    assert statuses == ["done"] * 4
