"""Conversions shared by the metrics: tensors/arrays/lists to float64 images and int64 labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _as_array(x: Any) -> np.ndarray:
    """Tensor/array/list -> float64 numpy array (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _as_labels(y: Any) -> np.ndarray:
    """Tensor/array/list of labels -> 1-D int64 numpy array."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError("labels must be integers")
    return arr.astype(np.int64)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (K, C, H, W) batches of equal shape, got {x.shape} and {y.shape}")
