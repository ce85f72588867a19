"""``deepleak train``: train a victim model, so that "untrained vs trained" is one override.

One run trains the configured model (``conf/model``) on the configured data set
(``conf/dataset``) for ``epochs`` passes over a training split, holds out a seeded,
per-class ``holdout`` fraction for the test accuracy, and writes into its run dir:

- ``checkpoint.pt``: the model's state dict only (loads with ``torch.load(weights_only=True)``,
  i.e. as ``deepleak attack model=X model.checkpoint=<run dir>/checkpoint.pt``);
- ``metrics.json``: final train and test accuracy, per-epoch history, sizes, wall time;
- with ``checkpoint_epochs=[0,1,5]``: ``checkpoints/epoch_N.pt`` (the same state-dict format;
  epoch 0 is the initial model, before any step) and beside each its stage file
  ``epoch_N.json`` (:mod:`deepleak.models.checkpoints`: the epoch, the train accuracy of those
  weights in eval mode, the test accuracy, the run's essentials), listed in metrics.json's
  ``checkpoints``. An attack on one records the victim's stage (metrics.json's ``victim``).

Accuracies are measured in eval mode. With ``precise_bn`` (default) the batch-norm running
statistics are recomputed over the training split after every epoch, so eval mode, the
test accuracy and an attack with ``bn_mode`` eval see statistics that fit the weights.

The attack must use the same model settings and a data set with the same number of classes
and image shape; the checkpoint does not fit otherwise (an error at load).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from deepleak.config import make, make_defence
from deepleak.defences import Defence, NoDefence, SecAgg
from deepleak.errors import DeepleakError
from deepleak.models import build_model
from deepleak.models.checkpoints import (
    CHECKPOINTS_DIR,
    epoch_checkpoint_name,
    write_stage,
)
from deepleak.runs import write_metrics
from deepleak.runtime import resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def validate(cfg: DictConfig) -> None:
    """Checks that need no data; run before any work."""
    if cfg.epochs < 1:
        raise DeepleakError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise DeepleakError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if not 0.0 <= cfg.holdout < 1.0:
        raise DeepleakError(f"holdout must be in [0, 1), got {cfg.holdout}")
    check_checkpoint_epochs(list(cfg.get("checkpoint_epochs") or []), cfg.epochs)
    make_defence(cfg)  # a defence's parameters are checked by its constructor
    resolve_device(cfg.device)


def check_checkpoint_epochs(epochs: list[int], total: int) -> None:
    """Each listed epoch in 0..``total`` (0: the initial model), none twice."""
    for epoch in epochs:
        if not 0 <= epoch <= total:
            raise DeepleakError(f"checkpoint_epochs must lie between 0 (the initial model) and epochs={total}, "
                                f"got {epoch}")
    repeated = sorted({epoch for epoch in epochs if epochs.count(epoch) > 1})
    if repeated:
        raise DeepleakError(f"checkpoint_epochs lists epoch {repeated[0]} more than once")


def run_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for the train/test split, the model init, the batch order and a
    defence's draws (the first three as before defences existed: a stream's first words)."""
    split, model, order, defence = np.random.SeedSequence([seed]).generate_state(4)
    return {"split": int(split), "model": int(model), "order": int(order), "defence": int(defence)}


def split_indices(targets: np.ndarray, holdout: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random split: (train indices, test indices), each sorted.

    ``round(holdout * n_c)`` items of every class c go to the test split, but at least one
    item of a class stays in training.
    """
    targets = np.asarray(targets)
    train, test = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        count = min(int(round(holdout * len(members))), len(members) - 1)
        test.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def minibatches(indices: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """A pass over ``indices`` (shuffled by ``rng``; in order for None) in batches of
    ``batch_size``; a last batch of one item joins the one before (batch norm in train mode
    cannot normalise a single item whose feature maps are 1x1)."""
    order = rng.permutation(indices) if rng is not None else np.asarray(indices)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if batch_size > 1 and len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


def _chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, dataset: Any, indices: np.ndarray, batch_size: int,
                            device: torch.device) -> None:
    """Replace every batch norm's running mean and variance by their average over one
    forward pass of ``indices`` in train mode ("precise BN"), no weight changes.

    During training the running statistics are an exponential average over batches seen
    under older weights; after few, large steps they no longer fit the weights, and eval
    mode then predicts one class (measured: ResNet-18 after 2 epochs, 0.10 test accuracy
    in eval mode, 0.90 after this pass).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(indices) == 0:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the pass
    model.train()
    try:
        for chunk in minibatches(np.sort(indices), batch_size, None):
            model(dataset.batch(chunk)[0].to(device))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, indices: np.ndarray, batch_size: int, device: torch.device) -> float | None:
    """Accuracy of ``model`` in eval mode (batch norm on its running statistics) on the
    items ``indices`` of ``dataset``; None for no items."""
    if len(indices) == 0:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for chunk in _chunks(indices, batch_size):
            images, labels = dataset.batch(chunk)
            logits = model(images.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(indices)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Any, batches: list[np.ndarray],
                device: torch.device, description: str, defence: Defence | None = None,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """One pass of mean cross-entropy steps; returns (mean loss, running accuracy) over the
    pass, both measured on each batch before its step, in train mode. ``defence`` (not
    none): each step's gradient is the defended client's (dp_sgd: clipped per sample and
    noised; others: the plain gradient transformed), drawn from ``generator``."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    progress = tqdm(batches, desc=description, leave=False, disable=None, unit="batch")
    for chunk in progress:
        images, labels = dataset.batch(chunk)
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise DeepleakError(f"the training loss became {loss.item()} ({description}); lower optimizer.lr")
        optimizer.zero_grad(set_to_none=True)
        if defence is None or isinstance(defence, NoDefence):
            loss.backward()
        else:
            set_defended_gradient(model, images, labels, defence, generator)
        optimizer.step()
        total_loss += loss.item() * len(chunk)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(chunk)
        progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return total_loss / seen, correct / seen


def set_defended_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, defence: Defence,
                          generator: torch.Generator | None) -> None:
    """Put the defended client's update for this batch into the parameters' ``.grad``."""
    for parameter, value in zip(model.parameters(), defence.step_update(model, images, labels, generator)):
        parameter.grad = value.detach().to(parameter.dtype)


def save_checkpoint(model: nn.Module, path: Path, exclusive: bool = False) -> Path:
    """Write the state dict (tensors on the CPU) atomically: a killed run never leaves half
    a checkpoint. ``exclusive``: refuse a path that exists instead of replacing it."""
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, temporary)
    if exclusive:
        try:
            try:
                os.link(temporary, path)  # atomic, and fails on an existing file (os.replace would not)
            except FileExistsError:
                raise DeepleakError(f"{path} exists; deepleak never overwrites a stage checkpoint") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise DeepleakError(f"{path} exists; deepleak never overwrites a stage checkpoint") from None
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path
    os.replace(temporary, path)
    return path


def stage_folder(run_dir: Path) -> Path:
    """Create ``run_dir/checkpoints`` for the stage checkpoints; one that exists (a reused run
    dir) is refused before any training, so nothing is overwritten."""
    folder = run_dir / CHECKPOINTS_DIR
    try:
        folder.mkdir()
    except FileExistsError:
        raise DeepleakError(f"{folder} exists; give the run a new directory (deepleak never overwrites "
                            "a stage checkpoint)") from None
    return folder


def keep_stage(model: nn.Module, folder: Path, epoch: int, train_accuracy: float | None,
               test_accuracy: float | None, essentials: dict[str, Any]) -> dict[str, Any]:
    """Write ``epoch_N.pt`` and its stage file into ``folder``; returns metrics.json's entry."""
    path = save_checkpoint(model, folder / epoch_checkpoint_name(epoch), exclusive=True)
    stage = write_stage(path, {"epoch": epoch, "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
                               **essentials})
    log.info("checkpoint of epoch %d: train accuracy %s, test accuracy %s: %s", epoch,
             "n/a" if train_accuracy is None else f"{train_accuracy:.3f}",
             "n/a" if test_accuracy is None else f"{test_accuracy:.3f}", path)
    return {"epoch": epoch, "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
            "checkpoint": f"{CHECKPOINTS_DIR}/{path.name}", "stage": f"{CHECKPOINTS_DIR}/{stage.name}"}


def _model_choice() -> str | None:
    """The model group option of this Hydra run (for the log's hint), if any."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("model")


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train into ``run_dir``; returns the metrics written to metrics.json.

    metrics.json is rewritten after every epoch; on Ctrl-C the weights so far are saved
    and the metrics say ``"interrupted": true``.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    validate(cfg)
    stage_epochs = sorted(cfg.get("checkpoint_epochs") or [])
    stages = stage_folder(run_dir) if stage_epochs else None  # before any work: a reused run dir is refused
    device = resolve_device(cfg.device)
    seeds = run_seeds(cfg.seed)
    dataset = make(cfg.dataset)
    targets = np.asarray(dataset.targets)
    train_idx, test_idx = split_indices(targets, cfg.holdout, np.random.default_rng(seeds["split"]))
    if cfg.holdout > 0 and len(test_idx) == 0:
        log.warning("holdout=%g leaves no test items (classes too small); no test accuracy", cfg.holdout)
    image_shape = tuple(dataset.image_shape)
    model = build_model(cfg.model, dataset.num_classes, image_shape, seeds["model"]).to(device)
    optimizer = make(cfg.optimizer)(model.parameters())
    order_rng = np.random.default_rng(seeds["order"])
    defence = make_defence(cfg)
    defence.check_model(model, "train")
    # secagg averages n clients' batches of batch_size into one step: a step of n x batch_size.
    step_size = cfg.batch_size * (defence.clients if isinstance(defence, SecAgg) else 1)
    generator = torch.Generator().manual_seed(seeds["defence"])
    checkpoint = run_dir / CHECKPOINT_FILE

    result: dict[str, Any] = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "dataset": type(dataset).__name__,
        "num_classes": dataset.num_classes,
        "image_shape": list(image_shape),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "holdout": cfg.holdout,
        "precise_bn": bool(cfg.precise_bn and has_batch_norm(model)),
        "train_size": len(train_idx),
        "test_size": len(test_idx),
        "seed": cfg.seed,
        "seeds": seeds,
        "device": str(device),
        "torch": torch.__version__,
        "checkpoint": CHECKPOINT_FILE,
        "defence": dict(defence.public()),
        "privacy": None,  # dp_sgd: epsilon at delta over the steps so far (Opacus's accountant)
        "history": [],
        "checkpoints": [],  # checkpoint_epochs: {epoch, train_accuracy, test_accuracy, checkpoint, stage}
        "epochs_done": 0,
        "interrupted": False,
    }
    essentials = {key: result[key] for key in ("model", "dataset", "num_classes", "image_shape", "optimizer", "epochs",
                                               "batch_size", "holdout", "precise_bn", "train_size", "test_size",
                                               "seed", "defence")}
    essentials["train_run"] = str(run_dir.resolve())

    def keep(epoch: int, test_accuracy: float | None) -> None:
        """The stage of ``epoch``: its train accuracy in eval mode (the history's is the
        running one, measured before each step) and the given test accuracy."""
        train_accuracy = evaluate(model, dataset, train_idx, cfg.batch_size, device)
        result["checkpoints"].append(keep_stage(model, stages, epoch, train_accuracy, test_accuracy, essentials))

    log.info("training %s on %d items of %s (%d held out), %d classes, %s px, %d epochs",
             type(model).__name__, len(train_idx), result["dataset"], len(test_idx), dataset.num_classes,
             "x".join(map(str, image_shape[1:])), cfg.epochs)
    steps = 0
    if 0 in stage_epochs:
        # The initial model. With precise BN its statistics are recomputed as after every
        # epoch (the weights are untouched; training resets the statistics before it reads them).
        if cfg.precise_bn:
            recompute_bn_statistics(model, dataset, train_idx, cfg.batch_size, device)
        keep(0, evaluate(model, dataset, test_idx, cfg.batch_size, device))
        write_metrics(run_dir, result)
    try:
        for epoch in range(1, cfg.epochs + 1):
            epoch_started = time.perf_counter()
            batches = minibatches(train_idx, step_size, order_rng)
            loss, running_accuracy = train_epoch(model, optimizer, dataset, batches, device,
                                                 f"epoch {epoch}/{cfg.epochs}", defence, generator)
            steps += len(batches)
            if cfg.precise_bn:
                recompute_bn_statistics(model, dataset, train_idx, cfg.batch_size, device)
            test_accuracy = evaluate(model, dataset, test_idx, cfg.batch_size, device)
            seconds = time.perf_counter() - epoch_started
            result["history"].append({"epoch": epoch, "train_loss": loss, "train_accuracy": running_accuracy,
                                      "test_accuracy": test_accuracy, "seconds": seconds})
            result.update(epochs_done=epoch, wall_seconds=time.perf_counter() - started,
                          privacy=defence.epsilon(steps=steps, sample_rate=min(1.0, step_size / len(train_idx))))
            log.info("epoch %d/%d: train loss %.4f, train accuracy %.3f, test accuracy %s (%.1f s)",
                     epoch, cfg.epochs, loss, running_accuracy,
                     "n/a" if test_accuracy is None else f"{test_accuracy:.3f}", seconds)
            if epoch in stage_epochs:
                keep(epoch, test_accuracy)
            write_metrics(run_dir, result)
    except KeyboardInterrupt:
        save_checkpoint(model, checkpoint)
        result.update(interrupted=True, wall_seconds=time.perf_counter() - started)
        write_metrics(run_dir, result)
        log.warning("interrupted after %d epochs; the weights so far are in %s", result["epochs_done"], checkpoint)
        raise
    save_checkpoint(model, checkpoint)
    result.update(
        train_accuracy=evaluate(model, dataset, train_idx, cfg.batch_size, device),
        test_accuracy=result["history"][-1]["test_accuracy"],
        wall_seconds=time.perf_counter() - started,
    )
    write_metrics(run_dir, result)
    choice = _model_choice()
    log.info("done in %.1f s: train accuracy %.3f, test accuracy %s; attack it with: deepleak attack %smodel.checkpoint=%s "
             "(same model settings and data set)", result["wall_seconds"], result["train_accuracy"],
             "n/a" if result["test_accuracy"] is None else f"{result['test_accuracy']:.3f}",
             f"model={choice} " if choice else "", checkpoint.resolve())
    return result
