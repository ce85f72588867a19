"""CIFAR-10 from a local copy in torchvision's format (never downloaded).

Integrity: torchvision checks the md5 of all six batch files on every construction and
then refuses any other bytes. We subclass it and check only that the files of the requested
split and ``batches.meta`` exist; the pickles are then read by torchvision's own code, and a
truncated or foreign file fails while unpickling or in the shape check below, which we turn
into a DeepleakError. This keeps real data on torchvision's code path, skips hashing 170 MB
per run, and lets tests use a tiny hand-made folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import Dataset

from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

MIN_RESOLUTION, MAX_RESOLUTION = 8, 512
_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class _TorchvisionCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 with the md5 checks replaced by existence checks (done by the caller)."""

    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}  # check_integrity(path, None) = isfile

    def _check_integrity(self) -> bool:
        return True


class CIFAR10(Dataset):
    """CIFAR-10 train or test split; 10 classes, 50 000 / 10 000 images.

    Item i is (image float32 (3, resolution, resolution) in [0, 1], label int). Images are kept
    as uint8 (N, 3, 32, 32) and resized per access (antialiased bilinear) when resolution != 32.
    """

    def __init__(self, root: str, train: bool = True, resolution: int = 32):
        if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
            raise DeepleakError(f"CIFAR-10 needs resolution between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {resolution}")
        root = os.path.abspath(os.path.expanduser(str(root)))
        folder = os.path.join(root, _TorchvisionCIFAR10.base_folder)
        if not os.path.isdir(folder):
            raise DeepleakError(
                f"CIFAR-10 not found under {root}: put the python version of CIFAR-10 (folder "
                f"{_TorchvisionCIFAR10.base_folder} from {_URL}) there, or set dataset.root=PATH"
            )
        files = [name for name, _ in (_TorchvisionCIFAR10.train_list if train else _TorchvisionCIFAR10.test_list)]
        missing = [f for f in files + [_TorchvisionCIFAR10.meta["filename"]] if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise DeepleakError(f"CIFAR-10 folder {folder} is incomplete (missing {', '.join(missing)}): unpack {_URL} there again")
        try:
            ds = _TorchvisionCIFAR10(root, train=bool(train), download=False)
            data = np.asarray(ds.data)
            targets = np.asarray(ds.targets, dtype=np.int64)
        except Exception as exc:  # unpickling errors, wrong keys, wrong sizes
            raise DeepleakError(f"CIFAR-10 files in {folder} could not be read ({type(exc).__name__}: {' '.join(str(exc).split())}): unpack {_URL} there again") from exc
        if data.ndim != 4 or data.shape[1:] != (32, 32, 3) or len(data) != len(targets) or len(data) == 0:
            raise DeepleakError(f"CIFAR-10 files in {folder} hold {data.shape} images and {len(targets)} labels instead of (N, 32, 32, 3) images with N labels: unpack {_URL} there again")
        if targets.min() < 0 or targets.max() >= 10:
            raise DeepleakError(f"CIFAR-10 files in {folder} hold labels outside 0..9: unpack {_URL} there again")

        self.root = root
        self.train = bool(train)
        self.resolution = int(resolution)
        self.num_classes = 10
        self.class_names: list[str] = list(ds.classes)
        self.image_shape = (3, self.resolution, self.resolution)
        self.targets = targets
        self._data = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))  # uint8 (N, 3, 32, 32)

    def __len__(self) -> int:
        return len(self.targets)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (K, 3, 32, 32) -> float32 (K, 3, res, res) in [0, 1]."""
        x = x.float().div_(255.0)
        if self.resolution != 32:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        return self._prepare(self._data[i][None])[0], int(self.targets[i])

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (K, 3, res, res) float32 in [0, 1] and labels (K,) int64 of the given items."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return self._prepare(self._data[torch.from_numpy(idx)]), torch.from_numpy(self.targets[idx])

    def __repr__(self) -> str:
        return f"CIFAR10(root={self.root!r}, train={self.train}, resolution={self.resolution})"
