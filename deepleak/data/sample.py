"""The embedded default data set: crops of the colour photos that scikit-image ships.

Nothing is downloaded. The photos are files inside the scikit-image wheel; each photo is cut
into a grid of regions and one region is one class. Classes are dealt to photos round-robin
(class c lives on photo ``c % P``), so the first 8 classes come from 8 different photos, and
each photo's regions are used from its centre outwards. Class c and its j-th crop depend only
on ``seed``, ``resolution``, ``c`` and ``j`` (not on ``num_classes`` or ``crops_per_class``),
so the 10-class set is a subset of the 100-class set.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)

MAX_CLASSES = 100
MIN_RESOLUTION, MAX_RESOLUTION = 8, 512
MAX_CROPS_PER_CLASS = 10_000

# (name, skimage.data function, trim box as fractions (top, left, bottom, right)).
# All eight are photos bundled in the scikit-image package (no pooch download). Synthetic
# colour images (colorwheel, logo) are left out: their flat areas give look-alike crops.
# The retina photo is trimmed to the square inside its circular field of view, which
# removes the black corners.
_PHOTOS: tuple[tuple[str, str, tuple[float, float, float, float]], ...] = (
    ("astronaut", "astronaut", (0.0, 0.0, 1.0, 1.0)),
    ("chelsea", "chelsea", (0.0, 0.0, 1.0, 1.0)),
    ("coffee", "coffee", (0.0, 0.0, 1.0, 1.0)),
    ("rocket", "rocket", (0.0, 0.0, 1.0, 1.0)),
    ("motorcycle", "stereo_motorcycle", (0.0, 0.0, 1.0, 1.0)),
    ("ihc", "immunohistochemistry", (0.0, 0.0, 1.0, 1.0)),
    ("hubble", "hubble_deep_field", (0.0, 0.0, 1.0, 1.0)),
    ("retina", "retina", (0.16, 0.16, 0.84, 0.84)),
)

# Crop side as a fraction of the region's shorter side (scale jitter).
_MIN_SCALE = 0.6
# Candidates drawn per round; fixed so the j-th crop of a class does not depend on
# crops_per_class.
_CHUNK = 64
# Crops are cut from a copy of the photo shrunk so that a region's shorter side is about
# max(2 * resolution, _MIN_WORK) pixels: resizing a 2x-larger crop with an antialiased filter
# looks the same as resizing the full-size crop, and is ~10x faster. _MIN_WORK keeps enough
# distinct crop positions at tiny resolutions.
_MIN_WORK = 64
# Eager rendering keeps all crops in memory when they fit in this budget (float32 bytes);
# larger sets render each crop on access.
_EAGER_BYTES = 256 * 2**20


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[tuple[str, torch.Tensor], ...]:
    """Decode the bundled colour photos once per process.

    Returns (name, image) pairs; image is float32 (3, H, W) in [0, 1]. Alpha channels are
    dropped, grayscale images skipped and photos missing from this scikit-image install
    skipped with a warning.
    """
    import skimage.data

    photos = []
    for name, func, (t, l, b, r) in _PHOTOS:
        try:
            arr = getattr(skimage.data, func)()
        except Exception as exc:  # a photo missing from this install (would need a download)
            log.warning("skipping scikit-image photo %s: %s", func, exc)
            continue
        if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.ndim != 3 or arr.shape[-1] < 3:
            continue
        arr = arr[..., :3]
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            continue
        h, w = arr.shape[:2]
        arr = arr[round(t * h) : round(b * h), round(l * w) : round(r * w)]
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
        photos.append((name, img.contiguous()))
    if not photos:
        raise DeepleakError("none of the scikit-image sample photos could be loaded, so the sample data set is unavailable; use dataset=cifar10 or dataset=imagenet")
    return tuple(photos)


@functools.lru_cache(maxsize=64)
def _working_photo(p: int, h: int, w: int) -> torch.Tensor:
    """Photo p resized (antialiased) to (3, h, w); the original when the size matches."""
    img = load_photos()[p][1]
    if (h, w) == tuple(img.shape[1:]):
        return img
    return F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].clamp_(0.0, 1.0)


def _regions(h: int, w: int, n: int) -> list[tuple[int, int, int, int, int, int]]:
    """The n most central cells of a near-square grid over an h x w photo.

    Returns (row, col, y0, x0, height, width) in pixels, centre first.
    """
    rows = max(1, round(math.sqrt(n * h / w)))
    cols = math.ceil(n / rows)
    ys = np.linspace(0, h, rows + 1).round().astype(int)
    xs = np.linspace(0, w, cols + 1).round().astype(int)
    cells = [
        (i, j, int(ys[i]), int(xs[j]), int(ys[i + 1] - ys[i]), int(xs[j + 1] - xs[j]))
        for i in range(rows)
        for j in range(cols)
    ]
    # Distance of the cell centre to the photo centre in photo-relative units.
    def dist(c):
        return ((c[2] + c[4] / 2) / h - 0.5) ** 2 + ((c[3] + c[5] / 2) / w - 0.5) ** 2

    return sorted(cells, key=dist)[:n]  # sorted() is stable: ties stay row-major


@contextlib.contextmanager
def _one_thread():
    """Run torch single-threaded inside the block.

    One crop is a tiny op; waking torch's intra-op thread pool for it costs far more than the
    work (measured 40x slower on a busy 2-core machine), so crops are rendered on one thread.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _render(photo: torch.Tensor, y: int, x: int, side: int, flip: bool, res: int) -> torch.Tensor:
    """One square crop of photo at (y, x) with the given side, resized to (3, res, res)."""
    crop = photo[:, y : y + side, x : x + side]
    if flip:
        crop = crop.flip(-1)
    out = F.interpolate(crop[None], size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp_(0.0, 1.0)


class SampleDataset(Dataset):
    """Offline image-classification set made of crops of scikit-image's colour photos.

    Item i is (image float32 (3, resolution, resolution) in [0, 1], label int). Items are
    ordered by class: item i has label ``i // crops_per_class``. A class is one region of one
    photo; its crops are random squares inside the region (side 60-100 % of the region's
    shorter side, random position, horizontal flip with probability 1/2), resized with an
    antialiased bilinear filter. All crops of a class are distinct images.
    """

    def __init__(self, num_classes: int = 10, resolution: int = 32, crops_per_class: int = 64, seed: int = 0):
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise DeepleakError(f"the sample data set has at most {MAX_CLASSES} classes (and at least 1), got num_classes={num_classes}")
        if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
            raise DeepleakError(f"the sample data set needs resolution between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {resolution}")
        if not 1 <= int(crops_per_class) <= MAX_CROPS_PER_CLASS:
            raise DeepleakError(f"the sample data set needs crops_per_class between 1 and {MAX_CROPS_PER_CLASS}, got {crops_per_class}")
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.crops_per_class = int(crops_per_class)
        self.seed = int(seed)
        self.image_shape = (3, self.resolution, self.resolution)

        photos = load_photos()
        per_photo = math.ceil(MAX_CLASSES / len(photos))
        grids = [_regions(img.shape[1], img.shape[2], per_photo) for _, img in photos]
        # Working copy of each photo (see _MIN_WORK) and the factor it was shrunk by.
        target = max(2 * self.resolution, _MIN_WORK)
        self._work: list[torch.Tensor] = []
        scales: list[float] = []
        for (_, img), grid in zip(photos, grids):
            s = min(1.0, target / min(min(h, w) for *_, h, w in grid))
            H, W = img.shape[1:]
            self._work.append(_working_photo(len(self._work), max(1, round(H * s)), max(1, round(W * s))))
            scales.append(s)

        # regions[c] = (photo index, y0, x0, height, width) of class c in the photo's pixels.
        self.regions: list[tuple[int, int, int, int, int]] = []
        self.class_names: list[str] = []
        self._work_regions: list[tuple[int, int, int, int, int]] = []  # same, in working pixels
        for c in range(self.num_classes):
            p, k = c % len(photos), c // len(photos)
            row, col, y0, x0, h, w = grids[p][k]
            self.regions.append((p, y0, x0, h, w))
            self.class_names.append(f"{photos[p][0]}_r{row}c{col}")
            s = scales[p]
            wy0, wx0 = round(y0 * s), round(x0 * s)
            self._work_regions.append((p, wy0, wx0, round((y0 + h) * s) - wy0, round((x0 + w) * s) - wx0))

        n = self.num_classes * self.crops_per_class
        self.targets = np.repeat(np.arange(self.num_classes, dtype=np.int64), self.crops_per_class)
        eager = n * 3 * self.resolution**2 * 4 <= _EAGER_BYTES
        self._params: list[tuple[int, int, int, int, bool]] = []  # (photo, y, x, side, flip), working pixels
        images: list[torch.Tensor] = []
        with _one_thread():
            for c in range(self.num_classes):
                params, imgs = self._class_crops(c, eager)
                self._params.extend(params)
                images.extend(imgs)
        self._images = torch.stack(images) if eager else None

    def _class_crops(self, c: int, render: bool) -> tuple[list, list[torch.Tensor]]:
        """crops_per_class distinct crops of class c (and their images when render)."""
        p, y0, x0, h, w = self._work_regions[c]
        hi = min(h, w)
        lo = max(1, math.ceil(_MIN_SCALE * hi))
        rng = np.random.default_rng([self.seed, c])
        params, imgs, seen, seen_img = [], [], set(), set()
        for _ in range(max(16, 4 * math.ceil(self.crops_per_class / _CHUNK))):
            side = rng.integers(lo, hi + 1, size=_CHUNK)
            dy = (rng.random(_CHUNK) * (h - side + 1)).astype(int)
            dx = (rng.random(_CHUNK) * (w - side + 1)).astype(int)
            flip = rng.random(_CHUNK) < 0.5
            for s, a, b, f in zip(side.tolist(), dy.tolist(), dx.tolist(), flip.tolist()):
                key = (p, y0 + a, x0 + b, s, f)
                if key in seen:
                    continue
                seen.add(key)
                if render:
                    img = _render(self._work[p], *key[1:], self.resolution)
                    # Distinct windows can still give identical pixels (flat areas); skip those.
                    digest = hash(img.numpy().tobytes())
                    if digest in seen_img:
                        continue
                    seen_img.add(digest)
                    imgs.append(img)
                params.append(key)
                if len(params) == self.crops_per_class:
                    return params, imgs
        raise DeepleakError(f"class {self.class_names[c]} of the sample data set has fewer than crops_per_class={self.crops_per_class} distinct crops; lower crops_per_class")

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i %= len(self)
        if self._images is not None:
            img = self._images[i]
        else:
            p, y, x, s, f = self._params[i]
            with _one_thread():
                img = _render(self._work[p], y, x, s, f, self.resolution)
        return img, int(self.targets[i])

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (K, 3, res, res) float32 in [0, 1] and labels (K,) int64 of the given items."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        if self._images is not None:
            return self._images[idx], torch.from_numpy(self.targets[idx.numpy()])
        with _one_thread():
            images = [self[int(i)][0] for i in idx]
        return torch.stack(images) if images else torch.empty(0, *self.image_shape), torch.from_numpy(self.targets[idx.numpy()])

    def __repr__(self) -> str:
        return f"SampleDataset(num_classes={self.num_classes}, resolution={self.resolution}, crops_per_class={self.crops_per_class}, seed={self.seed})"
