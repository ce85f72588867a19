"""The noise floor: the PSNR and SSIM that a reference which knows nothing about the private
batch reaches against it, the level a reconstruction must beat to have leaked anything.

Two references, each scored against every private image with the same :func:`psnr` and
:func:`ssim` as a reconstruction (pairing does not matter: a reference is one image per
private image, not an answer to be matched):

* ``uniform``: i.i.d. U[0, 1] noise, one image per private image, from a generator seeded
  with the trial's seed (the same noise for the same trial). Against a constant 0.5 image its
  expected MSE is 1/12, PSNR = 10 log10(12) = 10.79 dB.
* ``mean_image``: the per-pixel mean of a fixed sample of up to :data:`MEAN_IMAGE_SAMPLE`
  images of the data set the private batch was drawn from (:func:`dataset_mean_image`, once
  per run). A constant data set gives the capped PSNR (100 dB) and SSIM 1.

Per trial, ``metrics.json`` holds (:func:`noise_floor`)::

    "noise_floor": {"uniform": {"psnr": dB, "ssim": s},        # means over the K private images
                    "mean_image": {"psnr": dB, "ssim": s} | null,
                    "mean_image_over": images in the mean | null,
                    "mean_image_absent_reason": why it is null | null,
                    "seconds": time spent on the noise floor in this trial}

and its summary ``"noise_floor": {"uniform": {"psnr": {"mean", "std", "n"}, ...}, ...}``
(:func:`noise_floor_summary`; population std as the rest of the summary).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepleak.metrics.arrays import _as_array
from deepleak.metrics.images import psnr, ssim

#: Images of the data set averaged into the mean image (all of them when it has fewer).
MEAN_IMAGE_SAMPLE = 256
#: The references, in the order the report shows them.
REFERENCES = ("uniform", "mean_image")
_NOISE_STREAM = 0x6E6F6973  # "nois": the noise generator's own stream of the trial seed
_SAMPLE_SEED = 0  # the mean image's sample is the same for every run on a data set
_CHUNK = 32  # images read and summed at a time (bounds the memory at 224 px)


@dataclass(frozen=True)
class MeanImage:
    """The per-pixel mean ``image`` (C, H, W) float64 of ``count`` images of a data set."""

    image: np.ndarray
    count: int


def dataset_mean_image(dataset: Any, sample: int = MEAN_IMAGE_SAMPLE) -> MeanImage:
    """The mean of a fixed sample of up to ``sample`` images of ``dataset`` (anything with
    ``len`` and ``batch(indices) -> (images (K, C, H, W) in [0, 1], labels)``, as the data
    sets in :mod:`deepleak.data`). The sample (indices drawn without replacement with a fixed
    seed, sorted) depends only on the data set's length."""
    n = len(dataset)
    if n < 1:
        raise ValueError("the data set is empty: no mean image")
    take = min(int(sample), n)
    indices = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(n, size=take, replace=False))
    total = None
    for start in range(0, take, _CHUNK):
        images = _as_array(dataset.batch(indices[start:start + _CHUNK])[0])
        part = images.sum(axis=0)
        total = part if total is None else total + part
    return MeanImage(total / take, take)


def _scores(reference: np.ndarray, originals: np.ndarray) -> dict[str, float]:
    return {"psnr": float(np.mean(psnr(reference, originals))), "ssim": float(np.mean(ssim(reference, originals)))}


def noise_floor(originals: Any, seed: int, mean_image: MeanImage | None,
                absent_reason: str = "no data set to average") -> dict[str, Any]:
    """The noise floor of one trial's private batch ``originals`` (K, C, H, W) in [0, 1].

    ``seed``: the trial's seed (an int >= 0); the noise comes from
    ``default_rng([seed, _NOISE_STREAM])``. ``mean_image``: from :func:`dataset_mean_image`;
    None (an imported update without a data set) gives ``"mean_image": None`` and
    ``absent_reason``. Returns the JSON-ready dict described in the module docstring.
    """
    started = time.perf_counter()
    orig = _as_array(originals)
    noise = np.random.default_rng([int(seed), _NOISE_STREAM]).random(orig.shape)
    result: dict[str, Any] = {"uniform": _scores(noise, orig), "mean_image": None, "mean_image_over": None,
                              "mean_image_absent_reason": absent_reason if mean_image is None else None}
    if mean_image is not None:
        reference = np.broadcast_to(mean_image.image, orig.shape)
        result.update(mean_image=_scores(reference, orig), mean_image_over=mean_image.count)
    result["seconds"] = time.perf_counter() - started
    return result


def noise_floor_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"noise_floor": {reference: {"psnr"|"ssim": {"mean", "std", "n"}}}}`` over the
    trials that recorded it (empty when none did); std is the population std (ddof = 0)."""
    summary: dict[str, dict[str, Any]] = {}
    for reference in REFERENCES:
        for metric in ("psnr", "ssim"):
            values = [v for v in (_value(r, reference, metric) for r in records) if v is not None]
            if values:
                summary.setdefault(reference, {})[metric] = {
                    "mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    return {"noise_floor": summary} if summary else {}


def _value(record: dict[str, Any], reference: str, metric: str) -> float | None:
    floor = record.get("noise_floor")
    scores = floor.get(reference) if isinstance(floor, dict) else None
    value = scores.get(metric) if isinstance(scores, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
