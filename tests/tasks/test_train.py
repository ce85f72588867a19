"""``deepleak train``: a trained victim is one override away from an attack.

Tiny runs (LeNet, 16 px, a few classes) through the task function and the command line:
the files it writes, that the checkpoint loads through build_model, that training learns,
and the pieces (split, batches, precise BN) on their own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch
from torch import nn

from deepleak.config import precheck
from deepleak.errors import DeepleakError
from deepleak.models import ConvNet, build_model
from deepleak.tasks import train
from deepleak.config.train import register_train

TINY = ("dataset.num_classes=4", "dataset.resolution=16", "dataset.crops_per_class=16", "batch_size=8")


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_config_composes(train_cfg):
    cfg = train_cfg()
    assert cfg.model._target_ == "deepleak.models.LeNet"
    assert cfg.dataset._target_ == "deepleak.data.SampleDataset"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer._partial_
    assert cfg.epochs == 20 and cfg.holdout == 0.2 and cfg.precise_bn
    assert train_cfg("optimizer=adam").optimizer._target_ == "torch.optim.Adam"


def test_tiny_run_writes_checkpoint_and_metrics(train_cfg, tmp_path):
    cfg = train_cfg(*TINY, "epochs=3")
    result = train.run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_done"] == 3 and len(metrics["history"]) == 3
    assert metrics["train_size"] + metrics["test_size"] == 4 * 16
    assert metrics["test_size"] == 4 * round(0.2 * 16)
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    for epoch in metrics["history"]:
        assert 0.0 <= epoch["train_accuracy"] <= 1.0 and 0.0 <= epoch["test_accuracy"] <= 1.0
        assert epoch["train_loss"] > 0 and epoch["seconds"] > 0
    assert metrics["wall_seconds"] > 0 and metrics["interrupted"] is False
    assert result["train_accuracy"] == metrics["train_accuracy"]

    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)  # a plain state dict
    assert set(state) == {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                          "body.4.weight", "body.4.bias", "fc.weight", "fc.bias"}
    shape = (3, 16, 16)
    trained = build_model({**cfg.model, "checkpoint": str(path)}, 4, shape, seed=123)
    for name, value in trained.state_dict().items():
        assert torch.equal(value, state[name]), name
    untrained = build_model(cfg.model, 4, shape, seed=train.run_seeds(cfg.seed)["model"])
    assert not _params_equal(untrained, trained)


def test_training_learns(train_cfg, tmp_path):
    """4 classes (chance 0.25): LeNet learns them in a few seconds."""
    cfg = train_cfg("dataset.num_classes=4", "dataset.resolution=16", "dataset.crops_per_class=32",
                    "batch_size=8", "epochs=8")
    metrics = train.run(cfg, tmp_path)
    assert metrics["train_accuracy"] > 0.8
    assert metrics["test_accuracy"] > 0.6
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_same_seed_same_checkpoint(train_cfg, tmp_path):
    cfg = train_cfg(*TINY, "epochs=2")
    train.run(cfg, tmp_path / "a")
    train.run(cfg, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_holdout(train_cfg, tmp_path):
    metrics = train.run(train_cfg(*TINY, "epochs=1", "holdout=0"), tmp_path)
    assert metrics["test_size"] == 0 and metrics["test_accuracy"] is None
    assert metrics["train_size"] == 64


@pytest.mark.parametrize("override, message", [("epochs=0", "epochs"), ("holdout=1.0", "holdout"),
                                               ("batch_size=0", "batch_size")])
def test_invalid_values(train_cfg, tmp_path, override, message):
    with pytest.raises(DeepleakError, match=message):
        train.run(train_cfg(*TINY, override), tmp_path)


# --------------------------------------------------------------------------- pieces


def test_split_is_per_class_disjoint_and_seeded():
    targets = np.repeat(np.arange(5), [10, 10, 10, 3, 1])
    a_train, a_test = train.split_indices(targets, 0.2, np.random.default_rng(0))
    b_train, b_test = train.split_indices(targets, 0.2, np.random.default_rng(0))
    assert np.array_equal(a_train, b_train) and np.array_equal(a_test, b_test)
    assert not set(a_train) & set(a_test)
    assert sorted([*a_train, *a_test]) == list(range(len(targets)))
    assert np.bincount(targets[a_test], minlength=5).tolist() == [2, 2, 2, 1, 0]  # a class keeps >= 1 item
    _, other = train.split_indices(targets, 0.2, np.random.default_rng(1))
    assert not np.array_equal(a_test, other)


@pytest.mark.parametrize("n, size", [(17, 8), (16, 8), (9, 8), (1, 8), (5, 1)])
def test_minibatches_cover_once_without_single_item_batches(n, size):
    batches = train.minibatches(np.arange(n), size, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    if n > 1 and size > 1:
        assert min(len(b) for b in batches) > 1


class _Images:
    """A data set stand-in: .batch(indices) -> (images, labels)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def batch(self, indices):
        idx = torch.as_tensor(np.asarray(indices))
        return self.images[idx], torch.zeros(len(idx), dtype=torch.long)


def test_precise_bn_sets_the_statistics_of_the_data():
    torch.manual_seed(0)
    model = ConvNet(num_classes=3, image_shape=(3, 16, 16), width=2)
    images = torch.rand(24, 3, 16, 16) * 2 + 1
    bn = model.body[1]
    momentum = bn.momentum
    train.recompute_bn_statistics(model.eval(), _Images(images), np.arange(24), 8, torch.device("cpu"))
    with torch.no_grad():
        first = model.body[0](images)
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == momentum and not model.training  # settings restored
    assert train.has_batch_norm(model)


# --------------------------------------------------------------------------- command line


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``deepleak train ARGS`` through the real CLI."""
    command = [sys.executable, "-m", "deepleak.cli", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_command_writes_a_run_dir_that_the_attack_loads(tmp_path, compose):
    result = _run_cli(["epochs=2", "dataset.crops_per_class=16"], tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = sorted(p for p in (tmp_path / "outputs" / "train").glob("*/*") if p.is_dir())
    assert (run_dir / "status").read_text().strip() == "done"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log = (run_dir / "train.log").read_text()
    assert "epoch 2/2" in log and "model.checkpoint=" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and 0 <= metrics["test_accuracy"] <= 1

    # "Untrained vs trained" is one override: labels-only attack on the trained LeNet.
    from deepleak.tasks import attack

    checkpoint = run_dir / "checkpoint.pt"
    cfg = compose("attack=none", "labels=zeroshot", f"model.checkpoint={checkpoint}")
    out = tmp_path / "attack"
    out.mkdir()
    records = attack.run(cfg, out)
    assert 0.0 <= records["summary"]["label_accuracy"]["mean"] <= 1.0


@pytest.mark.parametrize(
    "args, expected",
    [
        (["epochs=abc"], "epochs must be of type int"),
        (["model.widht=3"], "unknown config key 'model.widht' (check its spelling; `deepleak train --cfg job`"),
        (["+optimizer.foo=1"], "unknown setting 'optimizer.foo'"),
        (["optimizer=rmsprop"], "unknown option optimizer=rmsprop; choose one of adam, sgd"),
        (["holdout=1.5"], "holdout must be in [0, 1)"),
        (["-m", "epochs=1,abc"], "epochs must be of type int"),
    ],
)
def test_precheck_stops_bad_command_lines(args, expected):
    with pytest.raises(DeepleakError) as error:
        precheck_train(args)
    assert expected in str(error.value)


def precheck_train(args):
    register_train()
    precheck(args, config_name="train", validate=train.validate, command="train")


def test_precheck_passes_good_command_lines():
    precheck_train(["model=resnet18", "optimizer=adam", "optimizer.lr=0.01", "-m", "epochs=1,2"])


def test_user_error_ends_in_one_line(tmp_path):
    result = _run_cli(["model.widht=3"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and lines[0].startswith("deepleak: error: "), result.stderr
    assert "unknown config key 'model.widht'" in lines[0]
