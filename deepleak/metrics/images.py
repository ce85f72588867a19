"""Image quality of a reconstruction against the private batch: MSE, PSNR, SSIM, the pairing
of reconstructions with originals, and all of them (with LPIPS) per paired image.

Images are ``(K, C, H, W)`` tensors (or arrays) with values in ``[0, 1]`` (data range 1),
C = 3 (RGB) or 1 (grey). Per-image metrics come back as float64 numpy arrays of shape (K,).
PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) so identical images give a finite number.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.optimize import linear_sum_assignment

from deepleak.metrics.arrays import _as_array, _as_labels, _check_pair
from deepleak.metrics.lpips import LPIPSMetric

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
"""PSNR reported for (near-)identical images, in dB; every PSNR is min(true value, cap)."""

_NONFINITE_PSNR = -1.0e6  # assignment cost stand-in for a NaN/inf reconstruction: always paired last


def _mean_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def mse(x: Any, y: Any) -> np.ndarray:
    """Per-image mean squared error.

    x, y: (K, C, H, W), same shape. Returns (K,) float64, mean over C*H*W of (x - y)^2.
    """
    x, y = _as_array(x), _as_array(y)
    _check_pair(x, y)
    return ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)


def psnr(x: Any, y: Any) -> np.ndarray:
    """Per-image PSNR in dB for data range 1: 10*log10(1 / mse), capped at PSNR_CAP_DB.

    x, y: (K, C, H, W) in [0, 1]. Returns (K,) float64. Identical images (mse 0) give
    PSNR_CAP_DB = 100 dB instead of inf so results stay valid JSON; the cap applies to all
    values so the metric stays monotone. NaN inputs give NaN (callers flag those).
    """
    err = mse(x, y)
    with np.errstate(divide="ignore"):
        val = 10.0 * np.log10(1.0 / err)
    return np.where(np.isnan(val), np.nan, np.minimum(val, PSNR_CAP_DB))


def ssim_win_size(height: int, width: int, default: int = 7) -> int:
    """SSIM window: the default 7, shrunk to the largest odd size <= min(H, W) (>= 3)."""
    side = min(default, height, width)
    side -= 1 - side % 2  # round down to odd
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 px, got {height}x{width}")
    return side


def ssim(x: Any, y: Any) -> np.ndarray:
    """Per-image SSIM (skimage's definition: uniform window, data_range=1, sample covariance,
    K1 = 0.01, K2 = 0.03, the window's border cropped, channels averaged).

    x, y: (K, C, H, W) in [0, 1]. Returns (K,) float64 in [-1, 1]. The window is
    :func:`ssim_win_size` so 8 px and 16 px images work (7 px window for >= 7 px sides).
    Computed over the batch at once with the same filters as
    ``skimage.metrics.structural_similarity`` per image and channel (the same numbers, tested
    to 1e-12); 16 32-px images take ~3 ms instead of ~14 ms on the 2-core reference CPU.
    """
    x, y = _as_array(x), _as_array(y)
    _check_pair(x, y)
    win = ssim_win_size(x.shape[2], x.shape[3])
    if not len(x):
        return np.zeros(0, dtype=np.float64)
    step = max(1, _SSIM_CHUNK // x[0].size)  # bounds the memory of the ~10 filtered copies
    return np.concatenate([_ssim_batch(x[i:i + step], y[i:i + step], win) for i in range(0, len(x), step)])


_SSIM_CHUNK = 1 << 18  # elements per SSIM chunk: 2 MiB per float64 copy stays in cache


def _ssim_batch(x: np.ndarray, y: np.ndarray, win: int) -> np.ndarray:
    """skimage's SSIM of every (image, channel) plane of two (K, C, H, W) float64 batches,
    averaged over channels: (K,)."""
    def mean(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=(1, 1, win, win))  # size 1: no pass along K and C

    cov_norm = win * win / (win * win - 1)  # sample covariance, as skimage's default
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # (K1 * data_range)^2, (K2 * data_range)^2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2  # the filter radius at the borders is left out
    return s[:, :, pad:s.shape[2] - pad, pad:s.shape[3] - pad].mean(axis=(2, 3), dtype=np.float64).mean(axis=1)


def pair(reconstructions: Any, originals: Any, rec_labels: Any = None,
         true_labels: Any = None) -> tuple[list[int], str]:
    """Match each original image with one reconstruction.

    reconstructions, originals: (K, C, H, W). rec_labels, true_labels: length-K ints or None.
    Returns ``(perm, rule)`` with ``reconstructions[perm[i]]`` paired to ``originals[i]``.

    rule "label": used when the true labels are all distinct and the restored labels equal
    them as a multiset; each original takes the reconstruction carrying its label (the attack
    itself decided which image is which class).
    rule "hungarian_psnr": otherwise, the one-to-one assignment maximising the summed PSNR
    (scipy linear_sum_assignment). NaN/inf reconstructions get a very low PSNR so they are
    assigned last.
    """
    rec, orig = _as_array(reconstructions), _as_array(originals)
    _check_pair(rec, orig)
    if rec_labels is not None and true_labels is not None:
        rl, tl = _as_labels(rec_labels), _as_labels(true_labels)
        if len(np.unique(tl)) == len(tl) == len(rl) and np.array_equal(np.sort(rl), np.sort(tl)):
            where = {int(label): j for j, label in enumerate(rl)}
            return [where[int(label)] for label in tl], "label"
    # Row per original; a loop keeps memory at one (K, C, H, W) batch instead of K of them.
    score = np.stack([psnr(rec, np.broadcast_to(o, rec.shape)) for o in orig])
    score = np.nan_to_num(score, nan=_NONFINITE_PSNR, posinf=PSNR_CAP_DB, neginf=_NONFINITE_PSNR)
    rows, cols = linear_sum_assignment(score, maximize=True)
    perm = np.empty(len(orig), dtype=np.int64)
    perm[rows] = cols
    return [int(j) for j in perm], "hungarian_psnr"


def closest_originals(reconstructions: Any, originals: Any) -> list[int]:
    """For fewer reconstructions (R) than originals (M): the M-index of the original each
    reconstruction is paired with, one-to-one, maximising the summed PSNR (a rectangular
    assignment; the naive attacker's K images against a secure aggregate's n x K union).
    ``originals[result]`` then pairs with ``reconstructions`` as :func:`image_metrics` expects."""
    rec, orig = _as_array(reconstructions), _as_array(originals)
    if len(rec) > len(orig) or rec.shape[1:] != orig.shape[1:]:
        raise ValueError(f"closest_originals needs at most as many reconstructions as originals of one shape, "
                         f"got {rec.shape} and {orig.shape}")
    score = np.stack([psnr(np.broadcast_to(r, orig.shape), orig) for r in rec])  # (R, M)
    score = np.nan_to_num(score, nan=_NONFINITE_PSNR, posinf=PSNR_CAP_DB, neginf=_NONFINITE_PSNR)
    rows, cols = linear_sum_assignment(score, maximize=True)
    chosen = np.empty(len(rec), dtype=np.int64)
    chosen[rows] = cols
    return [int(c) for c in chosen]


def image_metrics(reconstructions: Any, originals: Any, rec_labels: Any = None, true_labels: Any = None,
                  lpips_metric: LPIPSMetric | None = None) -> dict[str, Any]:
    """Pair reconstructions with originals, then score each pair.

    reconstructions, originals: (K, C, H, W) in [0, 1]. Reconstructions are clamped to [0, 1]
    first (metrics assume data range 1 and displayable images). Labels as in :func:`pair`.

    A reconstruction containing NaN/inf counts as failed: ``nonfinite_per_image`` is True for it,
    its per-image psnr/ssim/mse/lpips entries are None, and the *_mean values average the finite
    images only (None if there are none). ``nonfinite`` is True if any image failed, so a mean
    over fewer images is never silent; ``num_nonfinite`` counts them.

    Returns a JSON-serialisable dict; per-image lists are in the originals' order:
      pairing: "label" | "hungarian_psnr";  permutation: list[int] (see :func:`pair`)
      psnr, ssim, mse: list[float | None];  psnr_mean, ssim_mean, mse_mean: float | None
      psnr_cap_db: float (PSNR_CAP_DB)
      lpips: list[float | None] | None;  lpips_mean: float | None
      lpips_absent_reason: str | None (set whenever lpips is None)
      nonfinite: bool;  nonfinite_per_image: list[bool];  num_nonfinite: int
    """
    rec, orig = _as_array(reconstructions), _as_array(originals)
    _check_pair(rec, orig)
    perm, rule = pair(rec, orig, rec_labels, true_labels)
    rec = rec[perm]
    bad = ~np.isfinite(rec).reshape(len(rec), -1).all(axis=1)
    if bad.any():
        log.warning("%d of %d reconstructions contain NaN/inf; they are flagged and left out of the means",
                    int(bad.sum()), len(rec))
    rec = np.clip(rec, 0.0, 1.0)
    ok = ~bad

    def per_image(values: np.ndarray | None) -> list[float | None]:
        out: list[float | None] = [None] * len(rec)
        if values is not None:
            for i, v in zip(np.flatnonzero(ok), values):
                out[i] = float(v)
        return out

    any_ok = bool(ok.any())
    result: dict[str, Any] = {"pairing": rule, "permutation": perm, "psnr_cap_db": PSNR_CAP_DB}
    for name, fn in (("psnr", psnr), ("ssim", ssim), ("mse", mse)):
        vals = per_image(fn(rec[ok], orig[ok]) if any_ok else None)
        result[name], result[f"{name}_mean"] = vals, _mean_or_none(vals)

    if lpips_metric is None:
        result.update(lpips=None, lpips_mean=None, lpips_absent_reason="LPIPS not computed: no lpips_metric given")
    elif not lpips_metric.available:
        result.update(lpips=None, lpips_mean=None, lpips_absent_reason=lpips_metric.absent_reason)
    else:
        vals = per_image(lpips_metric(rec[ok], orig[ok]) if any_ok else None)
        result.update(lpips=vals, lpips_mean=_mean_or_none(vals), lpips_absent_reason=None)

    result.update(nonfinite=bool(bad.any()), nonfinite_per_image=[bool(b) for b in bad],
                  num_nonfinite=int(bad.sum()))
    return result
