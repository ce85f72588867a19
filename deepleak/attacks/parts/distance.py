"""Distances between a candidate gradient and the shared one, summed over layers.

Each takes two equal-length sequences of tensors (candidate, target) and returns a scalar
tensor that keeps the candidate's graph.

The attack evaluates a distance once per step on every parameter of the model (62 tensors
for ResNet-18), and its gradient is the start of the expensive double backward. So each
distance is one autograd node (:class:`torch.autograd.Function`) instead of a few nodes per
layer: the forward pass reduces every layer with one kernel, the backward pass writes the
closed-form gradient (L2: 2 (c - t); cosine: a t + b c for two scalars a, b) straight into
one tensor per layer, and the target's own statistics (its norm) are computed once per
target, not once per step. Small models (up to ``FLAT_MAX`` parameters) are handled as one
concatenated vector, and on CPU the scalars as Python numbers: per-operation overhead, not
arithmetic, is their cost. ``functional`` is the same value in plain differentiable torch
ops, for torch.func transforms (vmap, grad) and as the reference the tests compare against.

``direction`` serves the finite-difference image gradient (:mod:`deepleak.attacks.engine.image_gradient`),
which needs the value and dD/dc but no graph: both distances have dD/dc = alpha c + beta t,
so it returns the value, the two coefficients and ||dD/dc||, and the caller moves the
parameters along it without the gradient ever being materialised. ``restart_direction`` is
the same for R candidates stacked on a leading axis (batched restarts), in tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deepleak.attacks.parts.protocols import Direction


def _dot(candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """sum_i <c_i, t_i> over layers, one kernel per layer."""
    return torch.stack([torch.vdot(c.reshape(-1), t.reshape(-1)) for c, t in zip(candidate, target)]).sum()


def _squared_norm(tensors: Sequence[Tensor]) -> Tensor:
    """sum_i ||x_i||^2 over layers (torch._foreach_norm: one call for the whole list)."""
    return torch.stack(torch._foreach_norm(list(tensors))).square().sum()


def _restart_dot(candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """(R,): sum_i <c_i[r], t_i> for candidates stacked on a leading restart axis (one
    matrix-vector product per layer)."""
    return sum(c.flatten(1) @ t.reshape(-1) for c, t in zip(candidate, target))


def _restart_squared_norm(candidate: Sequence[Tensor]) -> Tensor:
    """(R,): sum_i ||c_i[r]||^2 for candidates stacked on a leading restart axis."""
    return sum(torch.linalg.vector_norm(c.flatten(1), dim=1).square() for c in candidate)


def _python_scalars(tensor: Tensor) -> bool:
    """Whether scalars derived from ``tensor`` are worth turning into Python numbers: on CPU
    (cheaper kernels, no device to sync with), not on a GPU (``.item()`` would sync)."""
    return tensor.device.type == "cpu"


def _scalar(value: Tensor) -> Tensor | float:
    """A 0-dim tensor as a Python number where :func:`_python_scalars` says so."""
    return value.item() if _python_scalars(value) else value


class _TargetCache:
    """Statistics of the target that do not change between steps, recomputed only when the
    target tensors (identity or in-place version) change."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tensors: Sequence[Tensor] | None = None  # a strong reference keeps the ids unique
        self.value = None

    def get(self, target: Sequence[Tensor], compute):
        key = tuple((id(t), t._version) for t in target)
        if key != self.key:
            self.tensors, self.key, self.value = list(target), key, compute(target)
        return self.value


# Up to this many parameters the layers are concatenated into one vector: a handful of kernels
# in all instead of a few per layer. On this CPU a small op costs 10-20 us whatever its size,
# so for LeNet (75k parameters, 8 tensors) that is most of the distance's cost; for
# ResNet-18 (11M, 62 tensors) the copy would cost more than the calls it saves.
FLAT_MAX = 2**20


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Views of ``vector`` with the given shapes, in order (the inverse of :func:`_flat`)."""
    return [part.view(shape) for part, shape in zip(vector.split([shape.numel() for shape in shapes]), shapes)]


class _L2Flat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, target: Tensor, *candidate: Tensor) -> Tensor:
        difference = _flat(candidate) - target
        ctx.difference, ctx.shapes = difference, [c.shape for c in candidate]
        return torch.dot(difference, difference)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, *_unflat(ctx.difference * _scalar(2 * grad), ctx.shapes))


class _CosineFlat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, target: Tensor, target_norm: Tensor, eps: float, *candidate: Tensor) -> Tensor:
        flat = _flat(candidate)
        dot = torch.dot(flat, target)
        candidate_norm = torch.linalg.vector_norm(flat)
        ctx.shapes = [c.shape for c in candidate]
        if _python_scalars(flat):
            # Scalars as Python numbers: a dozen 0-dim tensor ops (10-20 us each here) fewer.
            dot, candidate_norm, norm = dot.item(), candidate_norm.item(), float(target_norm)
            denominator = candidate_norm * norm + eps
            ctx.save_for_backward(flat, target)
            ctx.scalars = (dot, candidate_norm, norm, denominator)
            return flat.new_tensor(1 - dot / denominator)
        denominator = candidate_norm * target_norm + eps
        ctx.save_for_backward(flat, target, dot, candidate_norm, target_norm, denominator)
        return 1 - dot / denominator

    @staticmethod
    def backward(ctx, grad: Tensor):
        if hasattr(ctx, "scalars"):
            flat, target = ctx.saved_tensors
            dot, candidate_norm, norm, denominator = ctx.scalars
            a, b = _cosine_scalars(grad.item(), dot, candidate_norm, norm, denominator)
            gradient = torch.add(target * a, flat, alpha=b)
        else:
            flat, target, dot, candidate_norm, target_norm, denominator = ctx.saved_tensors
            a, b = map(_scalar, _cosine_coefficients(grad, dot, candidate_norm, target_norm, denominator))
            gradient = target * a + flat * b
        return (None, None, None, *_unflat(gradient, ctx.shapes))


def _cosine_scalars(grad: float, dot: float, candidate_norm: float, target_norm: float,
                    denominator: float) -> tuple[float, float]:
    """:func:`_cosine_coefficients` in Python numbers."""
    a = -grad / denominator
    b = grad * dot * target_norm / (candidate_norm * denominator**2) if candidate_norm > 0 else 0.0
    return a, b


def _cosine_coefficients(grad, dot, candidate_norm, target_norm, denominator):
    """(a, b) with dD/dc = a t + b c for D = 1 - dot / (|c| |t| + eps); a zero candidate has
    dot = 0 and b = 0 (its gradient is -t / eps, finite). Tensors, elementwise (one pair per
    restart for batched restarts)."""
    a = -grad / denominator
    scale = candidate_norm * denominator**2
    b = torch.where(scale > 0, grad * dot * target_norm / scale, torch.zeros_like(scale))
    return a, b


class _L2Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, count: int, *tensors: Tensor) -> Tensor:
        candidate, target = tensors[:count], tensors[count:]
        difference = torch._foreach_sub(list(candidate), list(target))
        ctx.difference = difference
        return _squared_norm(difference)

    @staticmethod
    def backward(ctx, grad: Tensor):
        gradients = torch._foreach_mul(ctx.difference, _scalar(2 * grad))
        return (None, *gradients, *([None] * len(gradients)))


class _CosineFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, count: int, target_norm: Tensor, eps: float, *tensors: Tensor) -> Tensor:
        candidate, target = tensors[:count], tensors[count:]
        dot = _dot(candidate, target)
        candidate_norm = _squared_norm(candidate).sqrt()
        denominator = candidate_norm * target_norm + eps
        ctx.save_for_backward(dot, candidate_norm, target_norm, denominator, *tensors)
        ctx.count = count
        return 1 - dot / denominator

    @staticmethod
    def backward(ctx, grad: Tensor):
        dot, candidate_norm, target_norm, denominator, *tensors = ctx.saved_tensors
        candidate, target = tensors[:ctx.count], tensors[ctx.count:]
        a, b = map(_scalar, _cosine_coefficients(grad, dot, candidate_norm, target_norm, denominator))
        if isinstance(a, float):
            # Python scalars: one fused pass per layer fewer (45 -> 25 ms on ResNet-18's 11M
            # parameters, one thread); on a GPU the tensor scalars avoid a sync instead.
            gradients = torch._foreach_mul(list(target), a)
            torch._foreach_add_(gradients, list(candidate), alpha=b)
        else:
            gradients = torch._foreach_mul(list(target), a)
            torch._foreach_add_(gradients, torch._foreach_mul(list(candidate), b))
        return (None, None, None, *gradients, *([None] * len(target)))


class L2:
    """Squared Euclidean distance summed over all layers (DLG, Geng et al.)."""

    name = "l2"

    def __init__(self) -> None:
        self._target = _TargetCache()

    def __call__(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        if sum(c.numel() for c in candidate) <= FLAT_MAX:
            return _L2Flat.apply(self._target.get(target, _flat), *candidate)
        return _L2Function.apply(len(candidate), *candidate, *target)

    @staticmethod
    def functional(candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        """The same value in plain torch ops (differentiable to any order; works under vmap)."""
        return sum(((c - t) ** 2).sum() for c, t in zip(candidate, target))

    def direction(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Direction:
        """(D, dD/dc = 2 c - 2 t as [(2, c), (-2, t)], ||dD/dc|| = 2 sqrt(D)); no graph."""
        with torch.no_grad():
            if sum(c.numel() for c in candidate) <= FLAT_MAX:
                difference = _flat(candidate) - self._target.get(target, _flat)
                value = float(torch.dot(difference, difference))
            else:
                value = float(_squared_norm(torch._foreach_sub(list(candidate), list(target))))
        return value, [(2.0, candidate), (-2.0, target)], 2.0 * max(value, 0.0) ** 0.5

    @staticmethod
    def restart_direction(candidate: Sequence[Tensor], target: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(D (R,), dD/dc = 2 (c - t) per layer (R, ...)) for candidates stacked on a leading
        restart axis (batched restarts); no graph."""
        with torch.no_grad():
            difference = [c - t for c, t in zip(candidate, target)]
            return _restart_squared_norm(difference), [d.mul_(2.0) for d in difference]


class Cosine:
    """1 - cosine similarity of the whole gradient, all layers as one vector (Inverting
    Gradients). ``eps`` keeps a zero candidate finite."""

    name = "cosine"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps
        self._target = _TargetCache()
        self._restart_target = _TargetCache()

    def __call__(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        if sum(c.numel() for c in candidate) <= FLAT_MAX:
            flat, norm = self._target.get(target, lambda t: (_flat(t), torch.linalg.vector_norm(_flat(t))))
            return _CosineFlat.apply(flat, norm, self.eps, *candidate)
        target_norm = self._target.get(target, lambda t: _squared_norm(t).sqrt())
        return _CosineFunction.apply(len(candidate), target_norm, self.eps, *candidate, *target)

    def direction(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Direction | None:
        """(D, dD/dc = a t + b c as [(b, c), (a, t)], ||dD/dc||); no graph. When the norm from
        the scalars would lose its digits to cancellation (a candidate almost parallel to the
        target, as near convergence), dD/dc is formed as one vector and its norm taken
        directly (layers up to FLAT_MAX parameters), or None: the caller then differentiates
        the distance itself."""
        flat = None
        with torch.no_grad():
            if sum(c.numel() for c in candidate) <= FLAT_MAX:
                target_flat, target_norm = self._target.get(target, lambda t: (_flat(t), torch.linalg.vector_norm(_flat(t))))
                flat = _flat(candidate)
                dot, candidate_norm = float(torch.dot(flat, target_flat)), float(torch.linalg.vector_norm(flat))
            else:
                target_norm = self._target.get(target, lambda t: _squared_norm(t).sqrt())
                dot, candidate_norm = float(_dot(candidate, target)), float(_squared_norm(candidate).sqrt())
        norm = float(target_norm)
        denominator = candidate_norm * norm + self.eps
        a, b = _cosine_scalars(1.0, dot, candidate_norm, norm, denominator)
        parts = (a * norm) ** 2 + (b * candidate_norm) ** 2
        squared = parts + 2 * a * b * dot
        if not squared > 1e-4 * parts:
            if flat is None:
                return None
            with torch.no_grad():
                # The same expression as the distance's backward (_CosineFlat), without a graph.
                gradient = flat.mul_(b).add_(target_flat, alpha=a)
            return 1 - dot / denominator, [(1.0, _unflat(gradient, [c.shape for c in candidate]))], float(
                torch.linalg.vector_norm(gradient))
        return 1 - dot / denominator, [(b, candidate), (a, target)], squared**0.5

    def restart_direction(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(D (R,), dD/dc = a_r t + b_r c_r per layer (R, ...)) for candidates stacked on a
        leading restart axis (batched restarts); no graph. The coefficients are those of the
        one-restart closed form (a zero candidate has b = 0)."""
        with torch.no_grad():
            target_norm = self._restart_target.get(target, lambda t: _squared_norm(t).sqrt())
            dot = _restart_dot(candidate, target)
            candidate_norm = _restart_squared_norm(candidate).sqrt()
            denominator = candidate_norm * target_norm + self.eps
            a, b = _cosine_coefficients(1.0, dot, candidate_norm, target_norm, denominator)
            direction = []
            for c, t in zip(candidate, target):
                shape = (-1,) + (1,) * (c.dim() - 1)  # (R,) over (R, ...)
                direction.append(torch.addcmul(c * b.view(shape), a.view(shape), t))
            return 1 - dot / denominator, direction

    def functional(self, candidate: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        """The same value in plain torch ops (differentiable to any order; works under vmap)."""
        dot = sum((c * t).sum() for c, t in zip(candidate, target))
        candidate_norm = sum((c * c).sum() for c in candidate)
        target_norm = sum((t * t).sum() for t in target)
        return 1 - dot / (torch.sqrt(candidate_norm * target_norm) + self.eps)
