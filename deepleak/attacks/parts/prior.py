"""Image priors added to the gradient distance, each with its weight from config.

A prior is a callable ``prior(images) -> scalar tensor`` on one candidate batch
(K, C, H, W), pixels in [0, 1], that keeps the graph to ``images``: every prior here acts on
the optimisation (nothing is detached but constants such as the model's running statistics).

A prior that needs the victim's activations also has ``attach(model) -> str | None`` and
``detach()`` (:class:`~deepleak.attacks.parts.protocols.ModelPrior`).
:class:`~deepleak.attacks.gradient_matching.GradientMatching` attaches it to the attacker's
model copy before the optimisation; the prior then reads what forward hooks
collected during the matching forward pass of the same candidate (no second forward), so it
must be called after that pass. ``attach`` returns None when the prior is active, else the
reason it contributes 0 (recorded in the reconstruction and in metrics.json).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from deepleak.attacks.parts.protocols import ClosedFormPrior, ModelPrior
from deepleak.errors import DeepleakError

log = logging.getLogger(__name__)


def _check_weight(name: str, weight: float) -> None:
    if not weight >= 0:  # also rejects NaN
        raise DeepleakError(f"attack.priors.{name}.weight must be >= 0, got {weight}")


class TotalVariation:
    """weight * (mean |dx| + mean |dy|) over a batch (K, C, H, W)."""

    name = "tv"

    def __init__(self, weight: float = 1e-4) -> None:
        _check_weight(self.name, weight)
        self.weight = weight

    def __call__(self, images: Tensor) -> Tensor:
        if torch._C._functorch.peek_interpreter_stack() is not None or images.dim() < 2:
            return self.functional(images)  # inside vmap / grad: plain ops
        return _TotalVariation.apply(images, self.weight)

    def functional(self, images: Tensor) -> Tensor:
        """The same value in plain torch ops (any order, torch.func transforms)."""
        dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
        dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
        return self.weight * (dx + dy)

    def value_and_gradient(self, images: Tensor, leading: int = 0) -> tuple[Tensor, Tensor]:
        """(value, image gradient) in closed form, without a graph: the finite-difference
        route adds them to its own instead of differentiating the prior. The first
        ``leading`` axes index separate batches (batched restarts: ``leading=1``, images
        (R, K, C, H, W)): the value then has their shape, one TV per batch."""
        with torch.no_grad():
            dx = images[..., :, 1:] - images[..., :, :-1]
            dy = images[..., 1:, :] - images[..., :-1, :]
            # Each mean is over one batch's differences: the axes after the leading ones.
            ax, ay = (self.weight / max(math.prod(d.shape[leading:]), 1) for d in (dx, dy))
            dims = tuple(range(leading, images.dim())) if leading else None
            # An L1 norm needs no |dx| temporary; the signs are scaled in place (LeNet batch 64:
            # 1.50 -> 0.92 ms).
            value = torch.linalg.vector_norm(dx, 1, dim=dims) * ax + torch.linalg.vector_norm(dy, 1, dim=dims) * ay
            return value, _tv_scatter(dx.sign_().mul_(ax), dy.sign_().mul_(ay), images.shape)


class _TotalVariation(torch.autograd.Function):
    """TV with its closed-form gradient: one node instead of a dozen, and no full-size zero
    tensor per slice (LeNet batch 64: value and gradient 1.74 -> 1.06 ms on one CPU thread).
    Its backward is built from differentiable ops."""

    @staticmethod
    def forward(ctx, images: Tensor, weight: float) -> Tensor:
        dx = images[..., :, 1:] - images[..., :, :-1]
        dy = images[..., 1:, :] - images[..., :-1, :]
        ctx.save_for_backward(dx.sign(), dy.sign())
        ctx.scales = (weight / max(dx.numel(), 1), weight / max(dy.numel(), 1))
        ctx.shape = images.shape
        return weight * (dx.abs().mean() + dy.abs().mean())

    @staticmethod
    def backward(ctx, grad: Tensor):
        sx, sy = ctx.saved_tensors
        ax, ay = ctx.scales
        return _tv_scatter(sx * (grad * ax), sy * (grad * ay), ctx.shape), None


def _tv_scatter(gx: Tensor, gy: Tensor, shape: torch.Size) -> Tensor:
    """TV's image gradient from the gradients of its horizontal and vertical differences."""
    out = gx.new_zeros(shape)
    # In-place on the views (``out[...] += g`` would copy each slice back once more).
    out[..., :, 1:].add_(gx)
    out[..., :, :-1].sub_(gx)
    out[..., 1:, :].add_(gy)
    out[..., :-1, :].sub_(gy)
    return out


class L2Norm:
    """weight * (1/K) sum_k ||x_k - center||_2: the Euclidean norm of each image's C*H*W
    pixels, averaged over the K images (Yin et al.'s R_l2, as in DeepInversion's code).

    Yin et al. apply it to normalised images, whose zero is the data mean; deepleak's pixels
    are in [0, 1] and the attacker knows no data mean, so ``center`` (default 0.5, mid-grey)
    takes that role; ``center=0`` is the literal ||x||_2. The norm, not its square, so the
    pull has the same strength at any distance (its gradient has norm weight / K per image).
    """

    name = "l2"

    def __init__(self, weight: float = 1e-4, center: float = 0.5) -> None:
        _check_weight(self.name, weight)
        self.weight = weight
        self.center = center

    def __call__(self, images: Tensor) -> Tensor:
        return self.weight * (images - self.center).flatten(1).norm(dim=1).mean()


class BatchNormStatistics:
    """weight * sum over BN layers l of ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2
    (Yin et al. 2021, from DeepInversion): mu_l, var_l are the per-channel mean and biased
    variance of the candidate batch at the input of BN layer l (over batch and spatial
    positions), collected by forward hooks during the matching forward pass; the running
    statistics are those of the public model when the prior is attached (copied then,
    because a train-mode forward pass updates them).

    It acts whatever the BN mode: the statistics are those of the layer's input. On a model
    without BN layers (with running statistics) it logs a warning once and contributes 0;
    ``attach`` returns the reason.
    """

    name = "bn"

    def __init__(self, weight: float = 1e-2) -> None:
        _check_weight(self.name, weight)
        self.weight = weight
        self._handles: list = []
        self._reference: list[tuple[Tensor, Tensor]] = []
        self._stats: list[tuple[Tensor, Tensor] | None] = []
        self._warned = False
        self.inactive: str | None = "not attached to a model"

    def attach(self, model: nn.Module) -> str | None:
        """Hook every BN layer of ``model``; returns None, or why the prior contributes 0."""
        self.detach()
        layers = [m for m in model.modules()
                  if isinstance(m, _BatchNorm) and m.running_mean is not None and m.running_var is not None]
        if not layers:
            self.inactive = f"{type(model).__name__} has no batch-norm layers with running statistics; the bn prior contributes 0"
            if not self._warned:
                log.warning("%s", self.inactive)
                self._warned = True
            return self.inactive
        self.inactive = None
        self._reference = [(m.running_mean.detach().clone(), m.running_var.detach().clone()) for m in layers]
        self._stats = [None] * len(layers)
        self._handles = [layer.register_forward_pre_hook(self._hook(i)) for i, layer in enumerate(layers)]
        return None

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._reference, self._stats = [], [], []
        self.inactive = "not attached to a model"

    def _hook(self, index: int):
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0]
            dims = [0, *range(2, x.dim())]  # all but the channel dimension
            self._stats[index] = (x.mean(dims), x.var(dims, unbiased=False))
        return hook

    def __call__(self, images: Tensor) -> Tensor:
        if self.inactive is not None:
            return images.new_zeros(())
        if any(s is None for s in self._stats):
            raise RuntimeError("the bn prior reads the matching forward pass: run the model on the candidate first")
        total = images.new_zeros(())
        for (mean, var), (running_mean, running_var) in zip(self._stats, self._reference):
            total = total + (mean - running_mean).norm() + (var - running_var).norm()
        return self.weight * total


@dataclass(frozen=True)
class PriorGroups:
    """The priors by how the finite-difference routes treat them (names kept, order kept):
    ``reads_model`` (:class:`~deepleak.attacks.parts.protocols.ModelPrior`, run after the pass
    at theta), ``closed_form`` (:class:`~deepleak.attacks.parts.protocols.ClosedFormPrior`, their
    gradient added directly) and ``of_images`` (the rest: images only, differentiated with the
    passes)."""

    reads_model: dict[str, ModelPrior]
    closed_form: dict[str, ClosedFormPrior]
    of_images: dict[str, Callable[[Tensor], Tensor]]


def group_priors(priors: Mapping[str, Callable[[Tensor], Tensor]]) -> PriorGroups:
    """Split ``priors`` into :class:`PriorGroups` (a prior that reads the model counts as such
    even if it has a closed form)."""
    groups = PriorGroups({}, {}, {})
    for name, prior in priors.items():
        if isinstance(prior, ModelPrior):
            groups.reads_model[name] = prior
        elif isinstance(prior, ClosedFormPrior):
            groups.closed_form[name] = prior
        else:
            groups.of_images[name] = prior
    return groups


def attach_priors(priors: dict, model: nn.Module | Sequence[nn.Module]) -> dict[str, str]:
    """Attach every prior that reads the model to ``model`` (for a list of models, the first:
    the public model W_0); returns {name: why it contributes 0} for the inactive ones."""
    first = model[0] if isinstance(model, (list, tuple)) else model
    inactive = {}
    for name, prior in priors.items():
        if isinstance(prior, ModelPrior):
            reason = prior.attach(first)
            if reason:
                inactive[name] = reason
    return inactive


def detach_priors(priors: dict) -> None:
    for prior in priors.values():
        if isinstance(prior, ModelPrior):
            prior.detach()
