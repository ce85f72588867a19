"""Where and how a job runs: the device, the CPU threads, and the per-trial seeds."""

from __future__ import annotations

import os

import numpy as np
import torch

from deepleak.errors import DeepleakError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA request is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeepleakError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeepleakError(f"device={name} asked for CUDA, but no CUDA device is available; use device=auto")
    return device


def trial_seeds(seed: int, trial: int) -> dict[str, int]:
    """Independent seeds for the batch, the model init, the attack and the defence's draws of
    one trial (the first three as before defences existed: a stream's first words)."""
    batch, model, attack, defence = np.random.SeedSequence([seed, trial]).generate_state(4)
    return {"batch": int(batch), "model": int(model), "attack": int(attack), "defence": int(defence)}


def set_threads(threads: int, launcher: str) -> None:
    """``threads=0`` (auto): one torch thread per job under a parallel launcher, else all
    cores but one. torch's CPU threads busy-wait: with every core in use and any other
    process running, a 2-thread LeNet step measured 80x slower here (464 ms vs 5.9 ms with one
    thread); leaving a core free costs little and avoids that cliff."""
    if threads == 0:
        threads = 1 if "BasicLauncher" not in launcher else max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(threads)


def preload_optimizers() -> float:
    """Pay torch's one-time optimiser import before an attack's clock starts; returns seconds.

    The first ``torch.optim`` optimiser built in a process imports ``torch._dynamo`` (1.2 s
    on the 2-core reference machine), which otherwise lands inside the first restart: in
    ``attack_seconds`` and in ``attack.budget_s``. Later calls cost nothing.
    """
    import time  # noqa: PLC0415

    started = time.perf_counter()
    import torch._dynamo  # noqa: F401, PLC0415

    return time.perf_counter() - started
