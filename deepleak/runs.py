"""The run dir: status markers, metrics and images, written so that nothing is lost.

Hydra creates the dir (:func:`unique_dir`, the ``deepleak_unique_dir`` resolver) and writes the
composed config under ``.hydra/`` and the log; this module adds the rest. Files are written
to a temporary name and renamed, so a killed run never leaves half a ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATUS_FILE = "status"
ERROR_FILE = "error.txt"
METRICS_FILE = "metrics.json"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def set_status(run_dir: Path, status: str, reason: str | None = None) -> None:
    """Mark the job running, done, failed or interrupted; ``reason`` is one line."""
    _atomic_write(Path(run_dir) / STATUS_FILE, status + "\n")
    if reason is not None:
        _atomic_write(Path(run_dir) / ERROR_FILE, reason.strip().replace("\n", " ") + "\n")


def read_status(run_dir: Path) -> str | None:
    path = Path(run_dir) / STATUS_FILE
    return path.read_text().strip() if path.is_file() else None


def _plain(value: Any) -> Any:
    """JSON-safe copy: tensors and arrays to lists, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    path = Path(run_dir) / METRICS_FILE
    _atomic_write(path, json.dumps(_plain(metrics), indent=2, allow_nan=False) + "\n")
    return path


def save_images(folder: Path, originals: torch.Tensor | None, reconstructions: torch.Tensor) -> list[str]:
    """Write ``grid.png`` (originals above reconstructions, paired column by column; the
    reconstructions alone when ``originals`` is None, an unscored imported update) and one
    PNG per reconstruction (``rec_00.png`` ...) at native resolution. Pixels in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    k = reconstructions.shape[0]
    side = reconstructions.shape[-1]
    scale = max(1, 128 // side)  # 32 px images are hard to see; enlarge the grid only
    shown = reconstructions.nan_to_num(0.0).clamp(0, 1).cpu()
    both = shown if originals is None else torch.cat([originals.cpu(), shown])
    if scale > 1:
        both = torch.nn.functional.interpolate(both, scale_factor=scale, mode="nearest")
    save_png(image_grid(both, columns=k), folder / "grid.png")
    names = []
    for i, image in enumerate(reconstructions.cpu()):
        name = f"rec_{i:02d}.png"
        save_png(image.nan_to_num(0.0).clamp(0, 1), folder / name)
        names.append(name)
    return names


def image_grid(images: torch.Tensor, columns: int, padding: int = 2, fill: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) -> one (C, H', W') image, ``columns`` per row, ``padding`` pixels of
    ``fill`` around every cell (the layout of torchvision.utils.make_grid)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.full((c, rows * (h + padding) + padding, columns * (w + padding) + padding), fill)
    for index, image in enumerate(images):
        y, x = divmod(index, columns)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = image
    return grid


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a (C, H, W) image in [0, 1] as an 8-bit PNG (grey for one channel), rounding as
    torchvision.utils.save_image does. Pillow only: no torchvision import on the run path."""
    from PIL import Image  # noqa: PLC0415

    pixels = image.detach().cpu().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


ATTEMPTS_FILE = "attempts.log"


def incomplete_reason(run_dir: Path, trials: int) -> str | None:
    """Why a job is not complete, in a few words; None when it is (marked done, its metrics
    holding every trial this run asks for)."""
    path = Path(run_dir) / METRICS_FILE
    status = read_status(run_dir)
    if status != "done":
        return f"marked {status}" if status else "never started"
    if not path.is_file():
        return "no metrics"
    try:
        done = json.loads(path.read_text()).get("trials_done")
    except (OSError, ValueError):
        return "unreadable metrics"
    return None if done == trials else f"it holds {done} trials, this run asks for {trials}"


def record_attempt(run_dir: Path, what: str) -> None:
    """Append one line per start or skip, so a sweep's history stays readable."""
    from datetime import datetime  # noqa: PLC0415

    with open(Path(run_dir) / ATTEMPTS_FILE, "a") as handle:
        handle.write(f"{datetime.now().isoformat(timespec='microseconds')} pid {os.getpid()} {what}\n")


def archive_previous(run_dir: Path) -> Path | None:
    """Move an unfinished attempt's results aside (``previous-1/``, ``previous-2/`` ...)
    before the job runs again, so nothing already written is overwritten."""
    run_dir = Path(run_dir)
    # "checkpoints": deepleak train's stage checkpoints (deepleak.models.checkpoints.CHECKPOINTS_DIR)
    leftovers = [run_dir / name for name in (METRICS_FILE, ERROR_FILE, "images", "checkpoints")
                 if (run_dir / name).exists()]
    if not leftovers:
        return None
    for attempt in range(1, 10_000):
        target = run_dir / f"previous-{attempt}"
        try:
            target.mkdir()
        except FileExistsError:
            continue
        for path in leftovers:
            os.replace(path, target / path.name)
        return target
    raise RuntimeError(f"too many previous attempts in {run_dir}")


def find_sweep(base: Path, task_overrides: list[str]) -> Path | None:
    """The newest sweep dir under ``base`` (``<date>/<time>``) that was launched with the
    same task overrides, ``resume`` aside; None if there is none."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    wanted = sorted(o for o in task_overrides if not o.split("=", 1)[0].lstrip("+~") == "resume")
    candidates = sorted(Path(base).glob("*/*/multirun.yaml"), key=lambda p: p.parent.as_posix(), reverse=True)
    for path in candidates:
        try:
            task = OmegaConf.to_container(OmegaConf.load(path).hydra.overrides.task)
        except Exception:  # an unreadable record cannot be resumed; look further back
            continue
        if sorted(o for o in task if not o.split("=", 1)[0].lstrip("+~") == "resume") == wanted:
            return path.parent
    return None


RESERVED: dict[str, str] = {}  # base -> the dir this process reserved last


def unique_dir(base: str) -> str:
    """Reserve and return ``base/<date>/<time to microseconds>`` that no one else has.

    The dir is created here with an exclusive mkdir, so two processes started in the same
    microsecond (or on two hosts sharing a file system) still get different dirs: the loser
    adds ``-1``, ``-2``, ...
    """
    now = datetime.now()
    parent = Path(base) / now.strftime("%Y-%m-%d")
    parent.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%H-%M-%S-%f")
    for attempt in range(1000):
        candidate = parent / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        RESERVED[base] = str(candidate)
        return str(candidate)
    raise RuntimeError(f"could not reserve a run dir under {parent}")
