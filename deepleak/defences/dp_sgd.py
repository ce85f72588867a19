"""DP-SGD (Abadi et al., 2016) on the client, as Opacus computes it: per-sample gradients,
each clipped to L2 norm C, summed, Gaussian noise of std sigma * C added, divided by the
batch size. It acts inside every local step (``per_step``), so FedAvg's W_T - W_0 is the sum
of noised steps and ``defend`` is the identity.

Opacus's conventions followed (opacus/optimizers/optimizer.py, 1.6): the clip factor is
``(C / (per_sample_norm + 1e-6)).clamp(max=1.0)`` with the norm over all parameters as one
vector; the noisy sum is divided by ``expected_batch_size``, here the batch's own size B
(len(labels)). Accounting (:meth:`DPSGD.epsilon`) is Opacus's own accountant.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from deepleak.defences.base import ClientContext, Defence, choice, draws, real
from deepleak.errors import DeepleakError

logger = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv")
# Opacus's guard against a zero norm in the clip factor.
NORM_EPSILON = 1e-6

_BATCH_NORM_MESSAGE = (
    "defence=dp_sgd needs per-sample gradients, which batch norm in train mode does not have; "
    "use a model without batch norm (or GroupNorm) or scenario.bn_mode=eval"
)


def has_batch_norm(model: nn.Module, training_only: bool = False) -> bool:
    """Whether the model has a batch-norm layer (with ``training_only``: one in train mode)."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or not training_only)
        for module in model.modules()
    )


def per_sample_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """The gradient of each sample's own cross-entropy w.r.t. ``model.parameters()``: one tensor
    (B, *shape) per parameter, in ``parameters()`` order (torch.func: vmap of grad over the
    batch, through ``functional_call`` with the model's parameters and buffers)."""
    if has_batch_norm(model, training_only=True):
        raise DeepleakError(_BATCH_NORM_MESSAGE)
    if len(labels) == 0:
        raise DeepleakError("defence=dp_sgd needs a non-empty batch")
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def sample_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, images, labels)
    return tuple(grads[name] for name in params)


def per_sample_norms(per_sample: Sequence[Tensor]) -> Tensor:
    """The L2 norm (B,) of each sample's gradient, all parameters as one vector (as Opacus)."""
    per_param = [g.reshape(len(g), -1).norm(2, dim=-1) for g in per_sample]
    return torch.stack(per_param, dim=1).norm(2, dim=1)


class DPSGD(Defence):
    """Per-sample clipping to ``max_norm`` C and Gaussian noise N(0, (noise_multiplier * C)^2)
    on the summed gradient of every local step, then divided by the batch size; (epsilon,
    delta) from Opacus's ``accountant`` ("rdp" or "prv")."""

    name = "dp_sgd"
    per_step = True

    def __init__(self, max_norm: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5, accountant: str = "rdp") -> None:
        self.max_norm = real("max_norm", max_norm)
        if self.max_norm <= 0:
            raise DeepleakError(f"defence.max_norm must be > 0, got {max_norm!r}")
        self.noise_multiplier = real("noise_multiplier", noise_multiplier)
        if self.noise_multiplier < 0:
            raise DeepleakError(f"defence.noise_multiplier must be >= 0, got {noise_multiplier!r}")
        self.delta = real("delta", delta)
        if not 0 < self.delta < 1:
            raise DeepleakError(f"defence.delta must be in (0, 1), got {delta!r}")
        self.accountant = choice("accountant", accountant, ACCOUNTANTS)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_norm": self.max_norm,
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
            "accountant": self.accountant,
        }

    def check_model(self, model: nn.Module, bn_mode: str) -> None:
        if bn_mode == "train" and has_batch_norm(model):
            raise DeepleakError(_BATCH_NORM_MESSAGE)

    def clipped_per_sample(self, model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        """Each sample's gradient (B, *shape) per parameter, scaled by Opacus's clip factor
        min(1, C / (||g_i|| + 1e-6)), so every sample's norm is at most C."""
        per_sample = per_sample_gradients(model, images, labels)
        factor = (self.max_norm / (per_sample_norms(per_sample) + NORM_EPSILON)).clamp(max=1.0)
        return tuple(factor.to(g.dtype).reshape(-1, *([1] * (g.dim() - 1))) * g for g in per_sample)

    def gradient(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """(sum_i clip(g_i) + N(0, (sigma C)^2)) / B per entry (Opacus sums with
        ``einsum("i,i...", factor, g)``; the same sum here); the noise is drawn from
        ``generator`` in float64 (see :func:`deepleak.defences.base.draws`), none when sigma = 0."""
        clipped = self.clipped_per_sample(model, images, labels)
        batch = len(labels)
        std = self.noise_multiplier * self.max_norm
        out = []
        for g in clipped:
            summed = g.sum(dim=0)
            if std > 0:
                summed = summed + (std * draws(summed.shape, summed, generator, "normal")).to(summed.dtype)
            out.append(summed / batch)
        return tuple(out)

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        """The identity: the noise is already in every step's :meth:`gradient`."""
        return tuple(update)

    def epsilon(self, steps: int, sample_rate: float) -> dict[str, Any]:
        """The (epsilon, delta) of ``steps`` noised steps at Poisson sample rate q from Opacus's
        accountant: the history of ``steps`` calls ``acc.step(noise_multiplier=sigma,
        sample_rate=q)`` (which Opacus compacts into one entry (sigma, q, steps)), then
        ``acc.get_epsilon(delta)``. sigma = 0 gives infinity; no steps give 0."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise DeepleakError(f"defence=dp_sgd accounting needs a number of steps >= 0, got {steps!r}")
        if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
            raise DeepleakError(f"defence=dp_sgd accounting needs a sample rate in (0, 1], got {sample_rate!r}")
        name = "opacus RDPAccountant" if self.accountant == "rdp" else "opacus PRVAccountant"
        if self.noise_multiplier == 0:
            value = math.inf
        elif steps == 0:
            value = 0.0
        else:
            # Imported here: opacus is slow to import and only accounting needs it.
            from opacus.accountants import PRVAccountant, RDPAccountant

            accountant = RDPAccountant() if self.accountant == "rdp" else PRVAccountant()
            accountant.history = [(self.noise_multiplier, float(sample_rate), steps)]
            value = float(accountant.get_epsilon(delta=self.delta))
        logger.debug("dp_sgd: epsilon %s at delta %s after %d steps at q=%s", value, self.delta, steps, sample_rate)
        return {"epsilon": value, "delta": self.delta, "accountant": name, "steps": steps, "sample_rate": float(sample_rate)}
