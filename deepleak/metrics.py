"""Compare attack output with the private truth: image quality, pairing and label recovery.

This is the only module that sees both the reconstruction and the private batch. All
functions are plain functions on tensors/arrays; everything that ends up in a result
dict is a Python float/int/str/bool/None or a list of those, so ``json.dumps`` works.

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

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
"""PSNR reported for (near-)identical images, in dB; every PSNR is min(true value, cap)."""

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet checkpoint name; its sha256 starts with the 8 hex digits in it."""

LPIPS_MIN_SIDE = 32
"""Below this side length (px) AlexNet's pooling collapses the maps to nothing, so LPIPS upsamples."""

LPIPS_UPSAMPLE_SIDE = 64
"""Smaller side (px) that images below LPIPS_MIN_SIDE are bilinearly upsampled to for LPIPS."""

_NONFINITE_PSNR = -1.0e6  # assignment cost stand-in for a NaN/inf reconstruction: always paired last


# --------------------------------------------------------------------------- helpers

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


def _mean_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# --------------------------------------------------------------------------- image metrics

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
    """Per-image SSIM (skimage, uniform window, data_range=1, channels averaged).

    x, y: (K, C, H, W) in [0, 1]. Returns (K,) float64 in [-1, 1]. The window is
    :func:`ssim_win_size` so 8 px and 16 px images work (7 px window for >= 7 px sides).
    """
    x, y = _as_array(x), _as_array(y)
    _check_pair(x, y)
    win = ssim_win_size(x.shape[2], x.shape[3])
    # skimage wants channel-last (H, W, C).
    return np.array([
        structural_similarity(a.transpose(1, 2, 0), b.transpose(1, 2, 0),
                              data_range=1.0, channel_axis=-1, win_size=win)
        for a, b in zip(x, y)
    ], dtype=np.float64)


# --------------------------------------------------------------------------- LPIPS

def alexnet_checkpoint_path() -> Path:
    """Where torchvision would cache the AlexNet weights: torch.hub.get_dir()/checkpoints/ALEXNET_FILE.

    torch.hub.get_dir() honours $TORCH_HOME (then $XDG_CACHE_HOME) at call time.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def _lpips_linear_weights_path() -> Path | None:
    """The lpips package's own v0.1 AlexNet linear-head weights (ship inside the package)."""
    try:
        import lpips
    except ImportError:
        return None
    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "alex.pth"


def _sha256_prefix_ok(path: Path) -> bool:
    """True if the file's sha256 starts with the hex digits in its torchvision name (as torch.hub checks)."""
    expected = path.name.rsplit("-", 1)[-1].split(".")[0]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(expected)


class LPIPSMetric:
    """LPIPS (net='alex', v0.1) built strictly from local files, or an "absent" record.

    Construction never touches the network: the lpips model is built with a random trunk
    (``pnet_rand=True``, which makes torchvision skip its download) and the trunk is then
    overwritten from the cached checkpoint ``alexnet_checkpoint_path()``, loaded with
    ``torch.load(weights_only=True)`` into a torchvision AlexNet (strict key check) and copied
    layer by layer. The linear heads are loaded from the lpips package's ``weights/v0.1/alex.pth``,
    also with a key check (lpips itself loads them with ``strict=False``, which could silently
    load nothing).

    If either file is missing, unreadable, or (with ``check_hash``) the checkpoint's sha256 does
    not match its name, ``available`` is False and ``absent_reason`` says why; calling it then
    raises. ``check_hash=False`` exists only so tests can exercise loading with a fake checkpoint.

    Call: ``metric(x, y) -> (K,) float64`` for (K, C, H, W) batches in [0, 1] (C = 1 or 3;
    grey is repeated to RGB). Inputs are mapped to [-1, 1] (lpips ``normalize=True``). Images
    with a side < LPIPS_MIN_SIDE (32 px) are bilinearly upsampled so the smaller side is
    LPIPS_UPSAMPLE_SIDE (64 px): AlexNet's stride-4 conv and two stride-2 pools reduce e.g. a
    16 px image to an empty map. 32 px and larger are used as is (comparable with CIFAR papers).
    """

    def __init__(self, device: str | torch.device = "cpu", check_hash: bool = True) -> None:
        self.device = torch.device(device)
        self.model: torch.nn.Module | None = None
        self.checkpoint_path = alexnet_checkpoint_path()
        self.absent_reason: str | None = self._find_problem(check_hash)
        if self.absent_reason is None:
            try:
                self.model = self._build()
            except Exception as exc:  # a broken file must not stop a long run; it is recorded instead
                self.absent_reason = f"LPIPS absent: could not load AlexNet weights from {self.checkpoint_path}: {exc}"
        if self.absent_reason is not None:
            log.warning(self.absent_reason)

    @property
    def available(self) -> bool:
        return self.model is not None

    def _find_problem(self, check_hash: bool) -> str | None:
        path = self.checkpoint_path
        if not path.is_file():
            return (f"LPIPS absent: AlexNet weights not found at {path}; put {ALEXNET_FILE} there "
                    "(torchvision's AlexNet ImageNet weights) to enable it")
        lin = _lpips_linear_weights_path()
        if lin is None or not lin.is_file():
            return f"LPIPS absent: the lpips package or its linear weights (weights/v0.1/alex.pth) are missing ({lin})"
        if check_hash and not _sha256_prefix_ok(path):
            return (f"LPIPS absent: {path} does not have the sha256 its name promises; it is not "
                    "torchvision's AlexNet ImageNet checkpoint")
        return None

    def _build(self) -> torch.nn.Module:
        import lpips
        import torchvision

        # Validate the checkpoint as a full torchvision AlexNet state dict (strict keys and shapes).
        alex = torchvision.models.alexnet(weights=None)
        alex.load_state_dict(torch.load(self.checkpoint_path, map_location="cpu", weights_only=True))

        # pnet_rand=True -> torchvision builds an untrained AlexNet, no download; verbose=False and
        # the stdout redirect keep lpips' prints out; the warning filter hides torchvision's
        # "pretrained is deprecated" notice that lpips triggers.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
            model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)

        # lpips slices keep torchvision's feature indices: net.slice2.3.weight <- features.3.weight.
        features = alex.features.state_dict()
        trunk = {name: features[name.split(".", 1)[1]] for name in model.net.state_dict()}
        model.net.load_state_dict(trunk, strict=True)

        lin_sd = torch.load(_lpips_linear_weights_path(), map_location="cpu", weights_only=True)
        # Heads are registered twice (lin0 and lins.0 are one module); the file names lin0..lin4.
        heads = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
        if set(lin_sd) != heads:
            raise RuntimeError(f"lpips linear weights have keys {sorted(lin_sd)}, expected {sorted(heads)}")
        model.load_state_dict(lin_sd, strict=False)  # the rest (trunk, scaling) is already set
        model.eval().requires_grad_(False)
        return model.to(self.device)

    @torch.no_grad()
    def __call__(self, x: Any, y: Any) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(self.absent_reason)
        x, y = (torch.as_tensor(_as_array(t), dtype=torch.float32, device=self.device) for t in (x, y))
        if x.ndim != 4 or x.shape != y.shape:
            raise ValueError(f"expected two (K, C, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        h, w = x.shape[2:]
        if min(h, w) < LPIPS_MIN_SIDE:
            scale = LPIPS_UPSAMPLE_SIDE / min(h, w)
            size = (round(h * scale), round(w * scale))
            x, y = (F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in (x, y))
        out = self.model(x, y, normalize=True)  # (K, 1, 1, 1)
        return out.reshape(-1).double().cpu().numpy()


def load_lpips(device: str | torch.device = "cpu") -> LPIPSMetric:
    """Build the LPIPS metric from local files; check ``.available`` / ``.absent_reason``."""
    return LPIPSMetric(device=device)


# --------------------------------------------------------------------------- pairing

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


# --------------------------------------------------------------------------- label metrics

def _counts(pred: Any, true: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    p, t = _as_labels(pred), _as_labels(true)
    for name, arr in (("predicted", p), ("true", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got {arr.min()}..{arr.max()}")
    if len(t) == 0:
        raise ValueError("true labels are empty")
    return np.bincount(p, minlength=num_classes), np.bincount(t, minlength=num_classes), len(t)


def label_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """Multiset overlap: sum_c min(n_pred[c], n_true[c]) / K, K = len(true).

    Order-free instance accuracy; equals iLRG's "IRec" (instance recall). true [0,0,1,2] vs
    pred [0,1,1,2] -> (1 + 1 + 1) / 4 = 0.75.
    """
    cp, ct, k = _counts(pred, true, num_classes)
    return float(np.minimum(cp, ct).sum() / k)


def count_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """iLRG's "LnAcc" (label-number accuracy): (1/C) * sum_{c<C} [n_pred[c] == n_true[c]].

    Fraction of all C classes whose instance count is restored exactly, absent classes included
    (as iLRG computes it: accuracy_score over the length-C count vectors). With C >> K the
    absent classes dominate; see :func:`count_accuracy_present` for the stricter variant.
    """
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.mean(cp == ct))


def count_accuracy_present(pred: Any, true: Any, num_classes: int) -> float:
    """Like :func:`count_accuracy` but over the classes present in truth or prediction only:
    mean_{c: n_pred[c] > 0 or n_true[c] > 0} [n_pred[c] == n_true[c]]. Not inflated by large C."""
    cp, ct, _ = _counts(pred, true, num_classes)
    seen = (cp > 0) | (ct > 0)
    return float(np.mean(cp[seen] == ct[seen]))


def existence_accuracy(pred: Any, true: Any, num_classes: int) -> float:
    """iLRG's "LeAcc" (label-existence accuracy): (1/C) * sum_{c<C} [(n_pred[c] > 0) == (n_true[c] > 0)].

    Fraction of all C classes whose presence/absence in the batch is restored correctly.
    """
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.mean((cp > 0) == (ct > 0)))


def existence_jaccard(pred: Any, true: Any, num_classes: int) -> float:
    """Jaccard index of the class sets: |P ∩ T| / |P ∪ T| (1.0 only for identical sets)."""
    cp, ct, _ = _counts(pred, true, num_classes)
    p, t = cp > 0, ct > 0
    return float((p & t).sum() / (p | t).sum())


def exact_batch(pred: Any, true: Any, num_classes: int) -> float:
    """1.0 if the predicted and true label multisets are equal (same counts for every class), else 0.0."""
    cp, ct, _ = _counts(pred, true, num_classes)
    return float(np.array_equal(cp, ct))


def label_metrics(pred: Any, true: Any, num_classes: int) -> dict[str, float]:
    """All label metrics above as a JSON-serialisable dict (keys = function names)."""
    return {fn.__name__: fn(pred, true, num_classes) for fn in (
        label_accuracy, count_accuracy, count_accuracy_present,
        existence_accuracy, existence_jaccard, exact_batch)}
