"""Compare attack output with the private truth: image quality, pairing and label recovery.

This is the only package that sees both the reconstruction and the private batch. All
functions are plain functions on tensors/arrays; everything that ends up in a result
dict is a Python float/int/str/bool/None or a list of those, so ``json.dumps`` works.

- :mod:`deepleak.metrics.images`: MSE, PSNR, SSIM, pairing reconstructions with originals,
  ``image_metrics``.
- :mod:`deepleak.metrics.lpips`: LPIPS from local weights only (``load_lpips``).
- :mod:`deepleak.metrics.labels`: label and count accuracies, ``label_metrics``; the label noise
  floor (``label_floor``: the accuracy of a blind, flat guess of the counts).
- :mod:`deepleak.metrics.noise_floor`: the PSNR/SSIM of uniform noise and of the data set's
  mean image against the private batch, the level an attack must beat (``noise_floor``).

Conventions
-----------
* Images are ``(K, C, H, W)`` tensors (or arrays) with values in ``[0, 1]`` (data range 1),
  C = 3 (RGB) or 1 (grey). Per-image metrics come back as float64 numpy arrays of shape (K,).
* Labels are int arrays of length K with values in ``[0, num_classes)``.
* PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) so identical images give a finite number.
* LPIPS (Zhang et al. 2018, AlexNet trunk, v0.1 linear heads) is only reported when
  torchvision's ImageNet AlexNet weights are already in the torch hub cache; nothing is
  ever downloaded, and a randomly initialised trunk is never reported as LPIPS.
"""

from deepleak.metrics.images import PSNR_CAP_DB, closest_originals, image_metrics, mse, pair, psnr, ssim, ssim_win_size
from deepleak.metrics.labels import (
    count_accuracy,
    count_accuracy_present,
    exact_batch,
    existence_accuracy,
    existence_jaccard,
    flat_guess,
    label_accuracy,
    label_floor,
    label_metrics,
)
from deepleak.metrics.lpips import (
    ALEXNET_FILE,
    LPIPS_MIN_SIDE,
    LPIPS_UPSAMPLE_SIDE,
    LPIPSMetric,
    alexnet_checkpoint_path,
    load_lpips,
)
from deepleak.metrics.noise_floor import (
    MEAN_IMAGE_SAMPLE,
    MeanImage,
    dataset_mean_image,
    noise_floor,
    noise_floor_summary,
)

__all__ = [
    "ALEXNET_FILE",
    "LPIPS_MIN_SIDE",
    "LPIPS_UPSAMPLE_SIDE",
    "MEAN_IMAGE_SAMPLE",
    "PSNR_CAP_DB",
    "LPIPSMetric",
    "MeanImage",
    "alexnet_checkpoint_path",
    "closest_originals",
    "count_accuracy",
    "count_accuracy_present",
    "dataset_mean_image",
    "exact_batch",
    "existence_accuracy",
    "existence_jaccard",
    "flat_guess",
    "image_metrics",
    "label_accuracy",
    "label_floor",
    "label_metrics",
    "load_lpips",
    "mse",
    "noise_floor",
    "noise_floor_summary",
    "pair",
    "psnr",
    "ssim",
    "ssim_win_size",
]
