"""Which CPU convolution kernels and memory layout an attack's evaluations run on
(``attack.conv_kernels``).

PyTorch runs CPU convolutions on oneDNN by default, on NCHW tensors. For the small
convolutions of a small model at batch 1 oneDNN's fixed cost per call dominates, and
PyTorch's native kernels (im2col + BLAS) are faster; from a few images on, oneDNN wins
clearly. oneDNN's own layout is channels-last: with the attacker's copy of the model in
channels-last memory format it skips the reorders around every convolution. Measured on the
2-core reference CPU, one thread, LeNet at 32 px:

- batch 1: training step 1.52 -> 1.17 ms native; finite-difference attack step 3.76 ->
  3.28 ms; double-backward step 4.84 -> 4.17 ms;
- batch 8: finite-difference step 6.8 -> 12.0 ms native, double backward 9.8 -> 18.6 ms;
- channels-last (interleaved, FD step / training step): 2.48 -> 2.32x at batch 8, 2.40 ->
  2.27x at batch 64; ResNet-18 CIFAR at batch 1 equal (2.31x, 2.39x).

``auto`` times one evaluation of the attack on each (oneDNN, oneDNN channels-last, native)
at the start of a reconstruction and keeps the fastest, as ``torch.backends.cudnn.benchmark``
does on a GPU. It is not the default for the same reason: when two are close, which one wins
can change from run to run, and results then differ in the last float digits. ``onednn`` is
PyTorch's own choice; ``channels_last`` and ``native`` force theirs. On a GPU (or without
oneDNN) the setting changes nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from deepleak.errors import DeepleakError

CHOICES = ("onednn", "channels_last", "native", "auto")
CANDIDATES = ("onednn", "channels_last", "native")  # what auto times
# An evaluation slower than this keeps oneDNN without timing the native kernels: large
# convolutions are oneDNN's strength, and the native ones could cost seconds there.
TUNE_MAX_S = 0.05


def check_choice(value: str) -> str:
    """``value`` if it is one of :data:`CHOICES`, else one clear DeepleakError."""
    if value not in CHOICES:
        raise DeepleakError(f"attack.conv_kernels must be one of {list(CHOICES)}, got {value!r}")
    return value


@contextmanager
def conv_kernels(choice: str, model: nn.Module | Sequence[nn.Module] | None = None) -> Iterator[None]:
    """Run the CPU convolutions inside on ``choice``'s kernels (``onednn``: PyTorch's default),
    with ``model`` (the attacker's copy, or copies, changed in place) in ``choice``'s memory
    layout."""
    layout = torch.channels_last if choice == "channels_last" else torch.contiguous_format
    for module in [model] if isinstance(model, nn.Module) else (model or []):
        module.to(memory_format=layout)
    if choice != "native":
        yield
        return
    # The flag alone (torch.backends.mkldnn.flags() would also reset oneDNN's TF32 setting, with a warning).
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def choose(setting: str, evaluate: Callable[[], object], device: torch.device,
           model: nn.Module | Sequence[nn.Module] | None = None, repeats: int = 3) -> str:
    """One of :data:`CANDIDATES`: ``setting`` itself, or for ``auto`` the one on which
    ``evaluate()`` runs fastest (medians of ``repeats`` interleaved wall-clock timings after a
    warm-up each; ``model``, the attacker's copy, is put in each one's layout in turn).
    ``onednn`` off CPU, without oneDNN, or when one evaluation takes longer than
    :data:`TUNE_MAX_S`."""
    if setting != "auto":
        return setting
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return "onednn"

    def timed(choice: str) -> float:
        with conv_kernels(choice, model):
            start = time.perf_counter()
            evaluate()
            return time.perf_counter() - start

    timed("onednn")
    if timed("onednn") > TUNE_MAX_S:
        return "onednn"
    candidates = CANDIDATES if model is not None else tuple(c for c in CANDIDATES if c != "channels_last")
    for choice in candidates[1:]:
        timed(choice)
    times: dict[str, list[float]] = {choice: [] for choice in candidates}
    for _ in range(repeats):
        for choice, values in times.items():
            values.append(timed(choice))
    return min(times, key=lambda choice: statistics.median(times[choice]))
