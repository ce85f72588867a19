"""Training-stage checkpoints: the stage file beside a checkpoint, and the victim's stage.

``deepleak train checkpoint_epochs=[0,5]`` keeps ``checkpoints/epoch_0.pt`` and
``checkpoints/epoch_5.pt`` (state dicts, as ``checkpoint.pt``) and beside each a *stage
file*, ``epoch_5.json``: the epoch, the accuracies of exactly those weights, the sha256 of the
``.pt`` and the training run's essentials. An attack on ``model.checkpoint=.../epoch_5.pt``
reads it (:func:`victim_stage`) into metrics.json's ``victim`` block, which the report draws
leakage against.

The block is metadata for the report, never attacker input: the task records it, no label
method or attack sees it. A missing, unreadable or stale stage file (its sha256 is not the
checkpoint's) gives an unknown stage (``epoch: null``) and a log line; it never stops an attack.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STAGE_SUFFIX = ".json"


def epoch_checkpoint_name(epoch: int) -> str:
    """``epoch_5.pt``: the checkpoint of the weights after ``epoch`` passes (0: the initial model)."""
    return f"epoch_{epoch}.pt"


def stage_path(checkpoint: str | Path) -> Path:
    """The stage file of a checkpoint: the same name with ``.json`` (``epoch_5.pt`` -> ``epoch_5.json``)."""
    return Path(checkpoint).with_suffix(STAGE_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_stage(checkpoint: Path, stage: dict[str, Any]) -> Path:
    """Write ``checkpoint``'s stage file: ``stage`` (epoch, accuracies, run essentials) plus the
    checkpoint's file name and sha256. Never overwrites: an existing stage file is an error."""
    checkpoint = Path(checkpoint)
    record = {**stage, "checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint)}
    path = stage_path(checkpoint)
    try:
        with open(path, "x", encoding="utf-8") as handle:  # "x": never overwrite
            handle.write(json.dumps(record, indent=2, allow_nan=False) + "\n")
    except FileExistsError:
        raise DeepleakError(f"{path} exists; deepleak never overwrites a checkpoint's stage file") from None
    return path


def _accuracy(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
    return float(value) if ok else None


def victim_stage(checkpoint: str | Path | None) -> dict[str, Any]:
    """metrics.json's ``victim`` block for the model option's ``checkpoint``.

    ``None`` (an untrained victim, drawn afresh per trial): epoch 0, accuracies null. A
    checkpoint with a stage file whose sha256 matches: its ``epoch``, ``train_accuracy`` (eval
    mode, on the training split), ``test_accuracy`` and ``train_run``. Any other checkpoint:
    ``epoch`` and accuracies null (stage unknown). ``checkpoint``: the path as configured.
    """
    if not checkpoint:
        return {"epoch": 0, "train_accuracy": None, "test_accuracy": None, "checkpoint": None, "train_run": None}
    unknown = {"epoch": None, "train_accuracy": None, "test_accuracy": None, "checkpoint": str(checkpoint),
               "train_run": None}
    path = stage_path(Path(checkpoint).expanduser())
    if not path.is_file():
        return unknown
    try:
        stage = json.loads(path.read_text(encoding="utf-8"))
        matches = stage.get("checkpoint_sha256") == file_sha256(Path(checkpoint).expanduser())
    except (OSError, ValueError, AttributeError) as error:
        log.warning("cannot read the stage file %s (%s); the victim's stage is unknown", path, error)
        return unknown
    epoch = stage.get("epoch")
    if not matches or not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        log.warning("the stage file %s does not describe %s (%s); the victim's stage is unknown", path, checkpoint,
                    "another checkpoint's sha256" if not matches else f"epoch {epoch!r}")
        return unknown
    train_run = stage.get("train_run")
    return {"epoch": epoch, "train_accuracy": _accuracy(stage.get("train_accuracy")),
            "test_accuracy": _accuracy(stage.get("test_accuracy")), "checkpoint": str(checkpoint),
            "train_run": train_run if isinstance(train_run, str) else None}
