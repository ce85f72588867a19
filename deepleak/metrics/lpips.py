"""LPIPS (Zhang et al. 2018, AlexNet trunk, v0.1 linear heads), built only from local files.

It is only reported when torchvision's ImageNet AlexNet weights are already in the torch hub
cache; nothing is ever downloaded, and a randomly initialised trunk is never reported as LPIPS.
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

from deepleak.metrics.arrays import _as_array

log = logging.getLogger(__name__)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet checkpoint name; its sha256 starts with the 8 hex digits in it."""

LPIPS_MIN_SIDE = 32
"""Below this side length (px) AlexNet's pooling collapses the maps to nothing, so LPIPS upsamples."""

LPIPS_UPSAMPLE_SIDE = 64
"""Smaller side (px) that images below LPIPS_MIN_SIDE are bilinearly upsampled to for LPIPS."""


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
