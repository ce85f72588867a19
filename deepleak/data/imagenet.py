"""ImageNet (or any image-classification tree) from a local ImageFolder-style folder.

Layout: ``root/<split>/<class>/*.JPEG``; when ``root/<split>`` does not exist, ``root`` itself
is read as ``root/<class>/*.jpg``. Classes are the sub-folder names in sorted order, so label
i is the i-th folder (for ImageNet's wnid folders this is the usual 0..999 order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset
from torchvision import transforms

from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

MIN_RESOLUTION, MAX_RESOLUTION = 16, 512
_SPLITS = ("train", "val", "test")


class _Folder(torchvision.datasets.ImageFolder):
    """ImageFolder that keeps only the first ``max_classes`` class folders (sorted)."""

    def __init__(self, root: str, max_classes: int | None, **kwargs):
        self._max_classes = max_classes
        super().__init__(root, **kwargs)

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        classes = classes[: self._max_classes] if self._max_classes is not None else classes
        return classes, {c: i for i, c in enumerate(classes)}


class ImageNet(Dataset):
    """Images of an ImageFolder tree, resized (shorter side) and centre-cropped to a square.

    Item i is (image float32 (3, resolution, resolution) in [0, 1], label int). Images are
    decoded on access; ``targets`` comes from the file listing, without decoding.
    """

    def __init__(self, root: str, resolution: int = 64, split: str = "val", max_classes: int | None = None):
        if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
            raise DeepleakError(f"the ImageNet data set needs resolution between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {resolution}")
        if max_classes is not None and int(max_classes) < 1:
            raise DeepleakError(f"the ImageNet data set needs max_classes of at least 1 (or null for all), got {max_classes}")
        root = os.path.abspath(os.path.expanduser(str(root)))
        where = f"put the images there as {root}/{split}/<class>/*.JPEG (or {root}/<class>/*.jpg), or set dataset.root=PATH"
        if not os.path.isdir(root):
            raise DeepleakError(f"ImageNet not found under {root}: {where}")
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            splits = sorted(s for s in _SPLITS if os.path.isdir(os.path.join(root, s)))
            if splits:  # root is split into train/val/..., but not the requested split
                raise DeepleakError(f"no {split!r} folder under {root} (found {', '.join(splits)}): set dataset.split to one of them")
            folder = root
        try:
            ds = _Folder(folder, None if max_classes is None else int(max_classes), allow_empty=True)
        except (FileNotFoundError, ValueError) as exc:  # no class folders at all
            raise DeepleakError(f"no class folders with images found under {folder}: {where}") from exc
        if len(ds.samples) == 0:
            raise DeepleakError(f"no images ({', '.join(torchvision.datasets.folder.IMG_EXTENSIONS)}) found in the class folders under {folder}: {where}")
        empty = sorted(set(ds.classes) - {ds.classes[t] for t in ds.targets})
        if empty:
            log.warning("%d class folder(s) under %s hold no images, e.g. %s", len(empty), folder, empty[0])

        self.root = root
        self.folder = folder
        self.split = split
        self.resolution = int(resolution)
        self.max_classes = max_classes
        self.num_classes = len(ds.classes)
        self.class_names: list[str] = list(ds.classes)
        self.image_shape = (3, self.resolution, self.resolution)
        self.targets = np.asarray(ds.targets, dtype=np.int64)
        self.samples: list[tuple[str, int]] = list(ds.samples)  # (path, label)
        self._transform = transforms.Compose(
            [
                transforms.Resize(self.resolution, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
                transforms.CenterCrop(self.resolution),
                transforms.ToTensor(),  # uint8 HWC -> float32 CHW in [0, 1]
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[int(i)]
        try:
            img = torchvision.datasets.folder.pil_loader(path)  # RGB, drops alpha / expands gray
        except Exception as exc:
            raise DeepleakError(f"could not read image {path} ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
        return self._transform(img), int(label)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (K, 3, res, res) float32 in [0, 1] and labels (K,) int64 of the given items."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = [self[i][0] for i in idx.tolist()]
        stacked = torch.stack(images) if images else torch.empty(0, *self.image_shape)
        return stacked, torch.from_numpy(self.targets[idx])

    def __repr__(self) -> str:
        return f"ImageNet(root={self.root!r}, resolution={self.resolution}, split={self.split!r}, max_classes={self.max_classes})"
