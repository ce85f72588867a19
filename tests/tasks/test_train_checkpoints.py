"""Training stages (issue 25): ``deepleak train checkpoint_epochs=[...]`` keeps a checkpoint and
its stage file at each listed epoch, refuses bad lists before any work, never overwrites, and an
attack on such a checkpoint records the victim's stage in metrics.json (``victim``)."""

import json

import numpy as np
import pytest
import torch

from deepleak.cli import main
from deepleak.config import make
from deepleak.errors import DeepleakError
from deepleak.models import build_model
from deepleak.models.checkpoints import file_sha256, stage_path, victim_stage
from deepleak.tasks import attack, train
from victims import train_victim

TINY = ("dataset.num_classes=4", "dataset.resolution=16", "dataset.crops_per_class=16", "batch_size=8")


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run with checkpoint_epochs=[0,1,3] of 3 epochs (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("train")
    cfg = train_victim(folder, *TINY, "epochs=3", "checkpoint_epochs=[3,0,1]")
    return cfg, folder, json.loads((folder / "metrics.json").read_text())


def test_the_listed_epochs_are_kept_with_their_stage_files(trained):
    _, folder, metrics = trained
    names = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert names == ["epoch_0.json", "epoch_0.pt", "epoch_1.json", "epoch_1.pt", "epoch_3.json", "epoch_3.pt"]
    assert (folder / "checkpoint.pt").is_file()  # the final checkpoint as before
    assert [c["epoch"] for c in metrics["checkpoints"]] == [0, 1, 3]
    for entry in metrics["checkpoints"]:
        stage = json.loads((folder / entry["stage"]).read_text())
        assert entry["checkpoint"] == f"checkpoints/epoch_{entry['epoch']}.pt"
        assert stage["epoch"] == entry["epoch"] and stage["checkpoint"] == f"epoch_{entry['epoch']}.pt"
        assert stage["checkpoint_sha256"] == file_sha256(folder / entry["checkpoint"])
        assert (stage["train_accuracy"], stage["test_accuracy"]) == (entry["train_accuracy"], entry["test_accuracy"])
        assert stage["train_run"] == str(folder.resolve())
        assert stage["epochs"] == 3 and stage["seed"] == 0 and stage["num_classes"] == 4
        assert stage["model"]["_target_"] == "deepleak.models.LeNet"


def test_stage_accuracies_are_the_epoch_log_s(trained):
    """The test accuracy of epoch N is the history's of epoch N; the last stage's train accuracy
    (eval mode, on the training split) is the run's final train accuracy."""
    _, folder, metrics = trained
    history = {h["epoch"]: h for h in metrics["history"]}
    stages = {e: json.loads((folder / "checkpoints" / f"epoch_{e}.json").read_text()) for e in (0, 1, 3)}
    for epoch in (1, 3):
        assert stages[epoch]["test_accuracy"] == history[epoch]["test_accuracy"]
    assert stages[3]["train_accuracy"] == metrics["train_accuracy"]
    assert stages[3]["test_accuracy"] == metrics["test_accuracy"]
    # The last stage is the final model.
    assert _equal(_state(folder / "checkpoints" / "epoch_3.pt"), _state(folder / "checkpoint.pt"))
    assert not _equal(_state(folder / "checkpoints" / "epoch_1.pt"), _state(folder / "checkpoint.pt"))


def test_epoch_0_is_the_initial_model_and_its_accuracy(trained):
    cfg, folder, _ = trained
    dataset = make(cfg.dataset)
    seeds = train.run_seeds(cfg.seed)
    initial = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), seeds["model"])
    assert _equal(_state(folder / "checkpoints" / "epoch_0.pt"), initial.state_dict())
    train_idx, test_idx = train.split_indices(dataset.targets, cfg.holdout, np.random.default_rng(seeds["split"]))
    stage = json.loads((folder / "checkpoints" / "epoch_0.json").read_text())
    device = torch.device("cpu")
    assert stage["train_accuracy"] == train.evaluate(initial, dataset, train_idx, 64, device)
    assert stage["test_accuracy"] == train.evaluate(initial, dataset, test_idx, 64, device)


def test_keeping_stages_does_not_change_training(train_cfg, trained, tmp_path):
    """Evaluating and saving at the stages draws no random numbers: the final weights are the
    same as without checkpoint_epochs."""
    _, folder, metrics = trained
    plain = train.run(train_cfg(*TINY, "epochs=3"), tmp_path)
    assert plain["checkpoints"] == []
    assert _equal(_state(tmp_path / "checkpoint.pt"), _state(folder / "checkpoint.pt"))
    assert [h["test_accuracy"] for h in plain["history"]] == [h["test_accuracy"] for h in metrics["history"]]


def test_a_run_dir_with_stages_is_never_overwritten(train_cfg, trained):
    _, folder, _ = trained
    before = (folder / "checkpoints" / "epoch_0.json").read_text()
    with pytest.raises(DeepleakError, match="checkpoints exists; give the run a new directory"):
        train.run(train_cfg(*TINY, "epochs=1", "checkpoint_epochs=[0]"), folder)
    assert (folder / "checkpoints" / "epoch_0.json").read_text() == before


@pytest.mark.parametrize(("value", "message"), [
    ("[0,-1]", "checkpoint_epochs must lie between 0 (the initial model) and epochs=3, got -1"),
    ("[0,4]", "checkpoint_epochs must lie between 0 (the initial model) and epochs=3, got 4"),
    ("[1,2,1]", "checkpoint_epochs lists epoch 1 more than once"),
    ("5", "checkpoint_epochs must be a list, e.g. checkpoint_epochs=[0,5]"),
    ("[a]", "checkpoint_epochs[0] must be of type integer, got 'a'"),
])
def test_bad_lists_are_refused_before_any_work_in_one_line(tmp_path, monkeypatch, capsys, value, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["train", *TINY, "epochs=3", f"checkpoint_epochs={value}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"deepleak: error: {message}\n"
    assert not any(tmp_path.iterdir())  # no run dir: nothing ran


def test_the_attack_records_the_victim_s_stage(compose, trained, tmp_path):
    _, folder, metrics = trained
    args = ("dataset.num_classes=4", "dataset.resolution=16", "dataset.crops_per_class=16", "batch_size=2",
            "attack=none", "save_images=false")
    checkpoint = folder / "checkpoints" / "epoch_1.pt"
    staged = attack.run(compose(*args, f"model.checkpoint={checkpoint}"), tmp_path / "staged")
    entry = metrics["checkpoints"][1]
    assert staged["victim"] == {"epoch": 1, "train_accuracy": entry["train_accuracy"],
                                "test_accuracy": entry["test_accuracy"], "checkpoint": str(checkpoint),
                                "train_run": str(folder.resolve())}
    assert json.loads((tmp_path / "staged" / "metrics.json").read_text())["victim"]["epoch"] == 1
    untrained = attack.run(compose(*args), tmp_path / "untrained")
    assert untrained["victim"] == {"epoch": 0, "train_accuracy": None, "test_accuracy": None, "checkpoint": None,
                                   "train_run": None}


def test_a_checkpoint_without_a_matching_stage_file_has_an_unknown_stage(trained, tmp_path):
    _, folder, _ = trained
    unknown = {"epoch": None, "train_accuracy": None, "test_accuracy": None, "train_run": None}
    assert victim_stage(folder / "checkpoint.pt") == {**unknown, "checkpoint": str(folder / "checkpoint.pt")}
    # A stage file copied beside another checkpoint: its sha256 does not match, so it is not believed.
    other = tmp_path / "epoch_3.pt"
    other.write_bytes((folder / "checkpoint.pt").read_bytes())
    stage_path(other).write_text((folder / "checkpoints" / "epoch_1.json").read_text())
    assert victim_stage(other) == {**unknown, "checkpoint": str(other)}
    stage_path(other).write_text("{not json")
    assert victim_stage(other)["epoch"] is None


def test_a_rerun_moves_the_unfinished_attempt_s_stages_aside(tmp_path):
    """Rerunning a job in its dir (resume) moves the old checkpoints/ to previous-N/ with its
    metrics, so the new attempt can keep its own stages and the old ones are kept."""
    from deepleak.runs import archive_previous

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch_0.json").write_text("{}")
    (tmp_path / "metrics.json").write_text("{}")
    target = archive_previous(tmp_path)
    assert target == tmp_path / "previous-1"
    assert (target / "checkpoints" / "epoch_0.json").is_file() and not (tmp_path / "checkpoints").exists()
