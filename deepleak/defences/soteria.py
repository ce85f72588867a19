"""Soteria (Sun et al., CVPR 2021, "Provable defense against privacy leakage in federated
learning from representation perspective"): prune the classifier's weight gradient along the
representation units that most help an attacker reconstruct the input.

Followed from the authors' code (github.com/jeremy313/Soteria, GS_attack/reconstruct_image.py):
for each representation unit j (an input of the last nn.Linear) they backpropagate a one-hot
cotangent on column j of the batch's features r (K, M) to the images, take per sample b the
norm ||d r_{b,j} / d x_b||_2 divided by r_{b,j} + 0.1, and sum over the batch. Here:

    score_j = sum_b ||d r_{b,j} / d x_b||_2 / (|r_{b,j}| + 1e-9)

the paper's ||dr/dX|| / ||r|| without their +0.1 offset (ports such as FedML's divide by
r_{b,j} alone, NaN for a dead ReLU unit): |r| + 1e-9 keeps every score finite and >= 0 and
gives a dead unit the score 0. For the sigmoid LeNet and ReLU features r >= 0, so the sign
never differs from theirs; the 0.1 offset does change the ranking slightly. Then, as
theirs, ``thresh = np.percentile(score, 100 * ratio)`` (linear interpolation; here
torch.quantile, the same rule) and ``mask = 0 where |score| < thresh else 1``: the units with
the SMALLEST scores are pruned (the paper's largest ||r|| / ||dr/dX||), units equal to the
threshold are kept, so with M units and distinct scores ceil(ratio * (M - 1)) columns are
zeroed (ratio = 0 zeroes none). The mask multiplies the columns of the last Linear's weight
gradient (update[weight_index][:, j]); no other tensor changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from deepleak.defences.base import ClientContext, Defence, fraction
from deepleak.errors import DeepleakError

logger = logging.getLogger(__name__)

# Offset of the denominator |r_{b,j}|: a dead unit (r = 0 and zero gradient) scores 0, not NaN.
EPSILON = 1e-9
# Input-gradient elements computed at once (units per chunk x K x C x H x W): bounds memory;
# the backward's intermediate activations grow with the chunk too.
CHUNK_ELEMENTS = 2**22


def last_parameter_module(model: nn.Module) -> nn.Module | None:
    """The last module (in ``modules()`` order) that holds parameters of its own."""
    last = None
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            last = module
    return last


def defended_layer(model: nn.Module) -> nn.Linear:
    """The model's last layer, which must be an nn.Linear (the classifier whose input is r)."""
    last = last_parameter_module(model)
    if not isinstance(last, nn.Linear):
        ends = type(last).__name__ if last is not None else "no layer with parameters"
        raise DeepleakError(f"defence=soteria needs a model whose last layer is nn.Linear; {type(model).__name__} ends in {ends}")
    return last


def weight_index(model: nn.Module, layer: nn.Linear) -> int:
    """The position of ``layer.weight`` in ``list(model.parameters())``, found by identity."""
    return next(i for i, p in enumerate(model.parameters()) if p is layer.weight)


def representation_scores(model: nn.Module, images: Tensor) -> Tensor:
    """score_j (M,) float64 of every representation unit over the batch (module docstring).

    The per-unit input gradients are one vector-Jacobian product per unit (a one-hot cotangent
    on column j of all K rows, as the authors' ``backward``), vectorised over the units with
    ``torch.func.vjp`` and ``vmap``, in chunks. One forward pass: with batch norm in train mode
    the features mix the batch, as in the authors' code; its running statistics are not
    updated (see :func:`batch_statistics_only`), so the model is left as it was.
    """
    defended_layer(model)
    with torch.no_grad(), batch_statistics_only(model):  # torch.func differentiates inside
        features, vjp = torch.func.vjp(lambda x: representation(model, x), images.detach())
        batch, units = features.shape
        chunk = max(1, min(units, CHUNK_ELEMENTS // max(images[0].numel() * batch, 1)))
        norms = []
        for start in range(0, units, chunk):
            stop = min(units, start + chunk)
            cotangents = torch.zeros(stop - start, batch, units, dtype=features.dtype, device=features.device)
            cotangents[torch.arange(stop - start), :, torch.arange(start, stop)] = 1
            (grads,) = torch.func.vmap(vjp)(cotangents)
            norms.append(grads.reshape(stop - start, batch, -1).double().norm(dim=2))
    norm = torch.cat(norms).T  # (K, M)
    return (norm / (features.double().abs() + EPSILON)).sum(dim=0)


@contextmanager
def batch_statistics_only(model: nn.Module) -> Iterator[None]:
    """Batch-norm layers in train mode normalise with the batch's statistics as always but stop
    tracking running statistics (``track_running_stats = False`` for the duration): the same
    output, no buffer update (which torch.func would refuse inside a transform)."""
    flipped = [
        module for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats
    ]
    for module in flipped:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in flipped:
            module.track_running_stats = True


def representation(model: nn.Module, x: Tensor) -> Tensor:
    """The input r of the model's last Linear on ``x`` (as ``deepleak.models.features_and_logits``;
    captured by a hook here so that this package does not import deepleak.models, which
    imports deepleak.config, which imports the defences)."""
    captured: list[Tensor] = []
    handle = defended_layer(model).register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1]


def keep_mask(scores: Tensor, ratio: float) -> Tensor:
    """True for the units kept: score >= the ``ratio`` quantile (linear interpolation)."""
    threshold = torch.quantile(scores, ratio)
    return scores >= threshold


class Soteria(Defence):
    """Zero the classifier-weight-gradient columns of the fraction ``ratio`` of representation
    units with the smallest score (see the module docstring for the exact rule)."""

    name = "soteria"

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = fraction("ratio", ratio)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": self.ratio}

    def check_model(self, model: nn.Module, bn_mode: str) -> None:
        defended_layer(model)

    def defend(self, update: Sequence[Tensor], context: ClientContext, generator: torch.Generator) -> tuple[Tensor, ...]:
        model = context.model
        layer = defended_layer(model)
        index = weight_index(model, layer)
        out = list(update)
        if len(out) != len(list(model.parameters())) or out[index].shape != layer.weight.shape:
            raise DeepleakError("defence=soteria needs the update in the order and shapes of the model's parameters")
        keep = keep_mask(representation_scores(model, context.images), self.ratio)
        logger.debug("soteria zeroes %d of %d representation columns", int((~keep).sum()), keep.numel())
        out[index] = out[index] * keep.to(device=out[index].device, dtype=out[index].dtype)
        return tuple(out)
