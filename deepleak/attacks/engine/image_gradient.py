"""How an attack step gets the image gradient of its gradient distance.

The step minimises D(g(v)) over the dummy variables v (images, and DLG's label logits),
where g(v) = grad_theta L(v; theta) is the candidate's parameter gradient. Its gradient is a
mixed second derivative:

    grad_v D = J_g(v)^T u,   u = dD/dg   =   d/de [ grad_v L(v; theta + e u) ] at e = 0.

- :class:`DoubleBackward` (the default, exact): autograd differentiates the parameter
  gradient once more (``create_graph=True``, reverse over reverse).
- :class:`FiniteDifference`: the right-hand form, as a difference of two *first-order*
  input gradients at parameters moved along u (the finite-difference Hessian-vector product
  of Pearlmutter 1994, and DARTS's second-order approximation, Liu et al. 2019, eq. 8):

      forward:  (grad_v L(v; theta + e u) - grad_v L(v; theta)) / e
      central:  (grad_v L(v; theta + e u) - grad_v L(v; theta - e u)) / (2 e)

  with e = ``step`` * ||theta|| / ||u||. A forward step costs a training step plus one more
  forward and input-only backward (a whole attack step measured 1.8-2.8x a training step,
  against 3.3-4.4x with the double backward, ``scripts/bench.py``); the central one a forward
  and backward more, and it is about 100x more accurate.

Kinks: across a ReLU's kink or a max-pool's change of winner the input gradient jumps, and a
difference across the jump is meaningless. The exact double backward holds every kink fixed,
so the passes at theta + e u replay the pattern of the pass at theta
(:mod:`deepleak.attacks.engine.kinks`): ReLU and MaxPool2d victims work (ImageNet's ResNet-18 agrees
to 0.99997 in float32); other kinks (LeakyReLU, SELU, hard activations) are refused.

What the passes skip: the moved pass points the model's own parameters at moved tensors and
back (no functional call; theta is never written) and asks for no parameter gradient; a
prior of the images alone rides in the moved pass (TV, with a closed-form gradient, is added
directly by the caller); and the image-facing convolution's
input gradient is left out of both passes and formed once from the two
(:func:`deepleak.attacks.engine.step.combine_deferred`).

The right step depends on the model's curvature (a 4-channel ResNet wants 100x smaller steps
than a 64-channel one) and on the float precision. So every reconstruction first computes the
exact gradient once on a random draw, picks the step on a grid that agrees with it best
(unless ``step`` is fixed), and refuses with one clear error when even the best agreement
(cosine) is below ``min_agreement``. Step and agreement are recorded in metrics.json. On the
bench's sigmoid LeNet and ResNet-18 the forward scheme agrees to 0.99999 in float32.

Threat model: both routes see the public model, the target gradient and the dummy
variables only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepleak.attacks.engine.kinks import FrozenMaxPool2d, freeze_kinks
from deepleak.attacks.engine.step import Deferral, combine_deferred, deferring, fast_double_backward, fast_input_gradient
from deepleak.attacks.parts.protocols import DirectionalDistance
from deepleak.errors import DeepleakError

# Layers whose gradient jumps: a difference of input gradients across the jump is meaningless.
# (Functional calls inside a custom model are not visible here; the start-up check catches those.)
NON_SMOOTH: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.SELU, nn.Threshold, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardshrink, nn.Softshrink, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)

# The start-up check draws its own variables from seed + this offset, so the restarts'
# random stream is the same with and without it.
CHECK_SEED_OFFSET = 7919

# loss(forward, variables): the victim's loss at the dummy variables, with ``forward`` the
# model's forward pass (at the public parameters, or at moved ones).
LossFn = Callable[[Callable[[Tensor], Tensor], Sequence[Tensor]], Tensor]


def norm(tensors: Sequence[Tensor]) -> Tensor:
    """The Euclidean norm of a list of tensors taken as one vector."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


class DoubleBackward:
    """Exact: ``grad(D(grad(L, theta, create_graph=True)), v)``."""

    name = "double_backward"
    exact = True

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The attacker's model copy, with convolutions whose double backward skips work the
        attack never uses (:func:`deepleak.attacks.engine.step.fast_double_backward`)."""
        return fast_double_backward(model)

    def __repr__(self) -> str:
        return "DoubleBackward()"


class FiniteDifference:
    """The image gradient from first-order passes at theta +- e u (see the module docstring).

    - ``scheme``: ``forward`` (one extra pass) or ``central`` (two, more accurate).
    - ``step``: e relative to ||theta|| / ||u||; None: calibrated by :meth:`check` at the
      start of each reconstruction (float32 optima measured on the bench's LeNet and
      ResNet-18: forward 3e-6 to 1e-5, cosine 0.99999; central about 3e-5, 0.9999985).
    - ``min_agreement``: the cosine between this route and the exact one, on a random draw at
      the start of each reconstruction, below which the attack refuses to run.
    """

    name = "finite_difference"
    exact = False
    SCHEMES = ("forward", "central")
    GRID = tuple(10.0 ** -k for k in range(2, 9))  # calibration: decades, then half-decades around the best
    FALLBACK_STEP = {"forward": 5e-6, "central": 3e-5}  # before calibration

    def __init__(self, scheme: str = "forward", step: float | None = None, min_agreement: float = 0.999) -> None:
        if scheme not in self.SCHEMES:
            raise DeepleakError(f"attack.image_gradient.scheme must be one of {list(self.SCHEMES)}, got {scheme!r}")
        if step is not None and not 0 < step < 1:
            raise DeepleakError(f"attack.image_gradient.step must be in (0, 1) or null (calibrated), got {step}")
        if not -1 <= min_agreement <= 1:
            raise DeepleakError(f"attack.image_gradient.min_agreement must be a cosine in [-1, 1], got {min_agreement}")
        self.scheme, self.step, self.min_agreement = scheme, None if step is None else float(step), float(min_agreement)
        self.current_step = self.step if self.step is not None else self.FALLBACK_STEP[scheme]
        self._public: tuple | None = None  # (model, parameters, detached parameters, ||theta||)
        self._versions: list[int] = []  # the parameters' version counters when last seen

    def __repr__(self) -> str:
        return f"FiniteDifference(scheme={self.scheme!r}, step={self.step})"

    def prepare_model(self, model: nn.Module, freeze: bool = True) -> nn.Module:
        """The attacker's model copy, its image-facing convolutions on a faster input gradient
        (:func:`deepleak.attacks.engine.step.fast_input_gradient`) and, with ``freeze``, its ReLU and
        max-pooling layers frozen between the passes (:mod:`deepleak.attacks.engine.kinks`); a
        DeepleakError if a layer whose gradient jumps is left (:data:`NON_SMOOTH`)."""
        pattern = freeze_kinks(model) if freeze else None
        model._deepleak_kinks = pattern
        kinks = sorted({type(m).__name__ for m in model.modules()
                        if isinstance(m, NON_SMOOTH) and not isinstance(m, FrozenMaxPool2d)})
        if kinks:
            frozen = " (ReLU and MaxPool2d are frozen between the passes; these are not)" if freeze else ""
            raise DeepleakError(
                f"attack.image_gradient=finite_difference needs a smooth victim, and {type(model).__name__} has "
                f"{', '.join(kinks)} (kinks){frozen}; use attack/image_gradient=double_backward or model.activation_fn=sigmoid|tanh|gelu"
            )
        return fast_input_gradient(model)

    # ------------------------------------------------------------------ one evaluation
    def value_and_gradient(
        self, model: nn.Module, variables: Sequence[Tensor], loss: LossFn,
        distance: Callable[[list[Tensor], list[Tensor]], Tensor], target: list[Tensor],
        extra: Callable[[Tensor], Tensor] | None = None, image_extra: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[float, float, list[Tensor]]:
        """(distance, extra + image_extra, gradient of distance + extras for each of ``variables``).

        - ``extra(images)`` (priors that read the model's activations, the BN prior) runs
          right after the forward pass at theta; its gradient is a backward pass of its own.
        - ``image_extra(images)`` (priors of the images alone without a closed-form gradient) rides in the passes at
          theta + a u as a * image_extra: the difference quotient turns that into exactly its
          gradient, so it costs no backward pass of its own.

        The passes at theta + a u point the model's own parameters at moved tensors (``.data``)
        and back afterwards: theta is never written, and it is cheaper than a functional call,
        which re-parametrises every module on every call."""
        live, params, theta_norm = self._public_parameters(model)
        pattern = getattr(model, "_deepleak_kinks", None)
        forward_scheme = self.scheme == "forward"
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_(True) for v in variables]
            with (pattern.recording() if pattern is not None else nullcontext(),
                  deferring(leaves[0]) if forward_scheme else nullcontext() as at_theta_deferred):
                value = loss(model, leaves)
            prior = extra(leaves[0]) if extra is not None else None
            prior_graph = prior is not None and prior.requires_grad
            wanted = live + (leaves if forward_scheme else [])
            grads = torch.autograd.grad(value, wanted, retain_graph=prior_graph, allow_unused=True)
            if at_theta_deferred is not None:
                at_theta_deferred.close()
            theta_grads = _fill(grads[:len(params)], params)
            # None where the deferral took the images' gradient: nothing to subtract there.
            at_theta = list(grads[len(params):]) if forward_scheme else None
            prior_grads = _fill(torch.autograd.grad(prior, leaves, allow_unused=True), leaves) if prior_graph else None
        prior_value = float(prior.detach()) if prior is not None else 0.0
        matched, u, u_norm = _direction(distance, theta_grads, target)
        image_prior = [0.0]
        if u_norm > 0 and math.isfinite(u_norm):
            e = self.current_step * theta_norm / u_norm

            def input_gradient(alpha: float) -> list[Tensor]:
                # grad_v [L(v; theta + alpha dD/dc) + alpha image_extra(v)]; dD/dc is never materialised.
                (first, tensors), *rest = u
                with torch.no_grad():
                    moved = torch._foreach_add(params, list(tensors), alpha=alpha * first)
                    for coefficient, tensors in rest:
                        torch._foreach_add_(moved, list(tensors), alpha=alpha * coefficient)
                flags = [parameter.requires_grad for parameter in live]
                for parameter, tensor in zip(live, moved):
                    # The model's own parameters point at the moved values for this pass; theta
                    # itself is never written. No parameter gradients here, not even in custom Functions.
                    parameter.requires_grad_(False)
                    parameter.data = tensor
                try:
                    with torch.enable_grad():
                        inputs = [v.detach().requires_grad_(True) for v in variables]
                        with (pattern.replaying() if pattern is not None else nullcontext(),
                              deferring(inputs[0]) as deferred[alpha]):
                            at = loss(model, inputs)
                        if image_extra is not None:
                            term = image_extra(inputs[0])
                            image_prior[0] = float(term.detach())
                            at = at + alpha * term
                        result = _fill(torch.autograd.grad(at, inputs, allow_unused=True), inputs)
                        deferred[alpha].close()
                        return result
                finally:
                    for parameter, original, flag in zip(live, params, flags):
                        parameter.data = original
                        parameter.requires_grad_(flag)

            deferred: dict[float, Deferral] = {}
            gradients = self.derivative(input_gradient, e, at_theta)
            # The image-facing convolutions' input gradients, left out of the passes, in one piece.
            images_part = (combine_deferred(deferred[e], at_theta_deferred, e) if forward_scheme
                           else combine_deferred(deferred[e], deferred[-e], 2 * e))
            if images_part is not None:
                gradients[0].add_(images_part)
        else:
            # A stationary point of the distance (or a non-finite one: the loop's check catches it).
            gradients = [torch.full_like(v, math.nan if not math.isfinite(u_norm) else 0.0) for v in variables]
            if image_extra is not None and math.isfinite(u_norm):
                with torch.enable_grad():
                    inputs = [v.detach().requires_grad_(True) for v in variables]
                    term = image_extra(inputs[0])
                    image_prior[0] = float(term.detach())
                    if term.requires_grad:
                        gradients = [g.add_(p) for g, p in zip(gradients, _fill(torch.autograd.grad(term, inputs, allow_unused=True), inputs))]
        if prior_grads is not None:
            gradients = [g.add_(p) for g, p in zip(gradients, prior_grads)]
        return matched, prior_value + image_prior[0], gradients

    def _public_parameters(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], float]:
        """(parameters, detached parameters, ||theta||), once per model and parameter state: the
        public parameters do not change during an attack (the passes at theta + a u point the
        parameters at other tensors and back; theta's own are never written). A change made
        elsewhere (version counters, new tensors) is seen. (The model is held by reference: an
        id could be reused.)"""
        public = self._public
        if (public is None or public[0] is not model or [p._version for p in public[2]] != self._versions
                or any(p.data_ptr() != q.data_ptr() for p, q in zip(public[1], public[2]))):
            live = list(model.parameters())
            params = [p.detach() for p in live]
            self._public = (model, live, params, float(norm(params)) or 1.0)
            self._versions = [p._version for p in params]
        return self._public[1:]

    # ------------------------------------------------------------------ the self-check
    def agreement(self, model: nn.Module, variables: Sequence[Tensor], loss: LossFn,
                  distance: Callable[[list[Tensor], list[Tensor]], Tensor], target: list[Tensor]) -> float:
        """Cosine between this route's gradient (at the current step) and the exact double
        backward's at ``variables`` (all variables as one vector)."""
        return self._agreements(model, variables, loss, distance, target, [self.current_step])[self.current_step]

    def _agreements(self, model, variables, loss, distance, target, steps) -> dict[float, float]:
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_(True) for v in variables]
            theta_grads = torch.autograd.grad(loss(model, leaves), list(model.parameters()), create_graph=True)
            exact = torch.autograd.grad(distance(list(theta_grads), target), leaves)
        return self.agreements(exact, lambda: self.value_and_gradient(model, variables, loss, distance, target)[2], steps)

    def agreements(self, exact: Sequence[Tensor], approximate: Callable[[], Sequence[Tensor]],
                   steps: Sequence[float]) -> dict[float, float]:
        """{step: cosine between ``exact`` and ``approximate()`` evaluated at that step}."""
        exact_flat, current, scores = _flat(exact), self.current_step, {}
        try:
            for step in steps:
                self.current_step = step
                scores[step] = float(F.cosine_similarity(_flat(approximate()), exact_flat, dim=0).nan_to_num(-1.0))
        finally:
            self.current_step = current
        return scores

    def check(self, model: nn.Module, variables: Sequence[Tensor], loss: LossFn,
              distance: Callable[[list[Tensor], list[Tensor]], Tensor], target: list[Tensor]) -> tuple[float, float]:
        """(agreement, step): calibrate the step on :attr:`GRID` (unless fixed) against the
        exact gradient at ``variables``; raise a DeepleakError when the agreement is below
        ``min_agreement``. The step is kept for the following evaluations."""
        return self.calibrate(lambda steps: self._agreements(model, variables, loss, distance, target, steps),
                              type(model).__name__)

    def calibrate(self, agreements: Callable[[Sequence[float]], dict[float, float]], what: str) -> tuple[float, float]:
        """(agreement, step) from ``agreements(steps)`` ({step: cosine to the exact gradient}):
        the fixed step, or the best of :attr:`GRID` refined by half-decades; a DeepleakError
        below ``min_agreement``. Keeps the step for the following evaluations."""
        if self.step is not None:
            scores = agreements([self.step])
        else:
            scores = agreements(self.GRID)
            best = max(scores, key=scores.get)
            scores.update(agreements([best * 10**0.5, best / 10**0.5]))
        step = max(scores, key=scores.get)
        value = scores[step]
        if not value >= self.min_agreement:
            raise DeepleakError(
                f"attack.image_gradient=finite_difference agrees with the exact image gradient only to cosine "
                f"{value:.4f} at best (< min_agreement {self.min_agreement}) on {what}: finite "
                f"differences need a smooth victim (kinks other than ReLU and max-pooling, which are frozen, break them); "
                f"use attack/image_gradient=double_backward"
            )
        self.current_step = step
        return value, step

    def derivative(self, evaluate: Callable[[float], Sequence[Tensor]], e: float,
                   at_zero: Sequence[Tensor] | None = None) -> list[Tensor]:
        """d/da evaluate(a) at a = 0 by this scheme, with step ``e``; ``at_zero``: evaluate(0)
        when the caller already has it (forward scheme; a None entry counts as zero)."""
        plus = evaluate(e)
        if self.scheme == "forward":
            base = evaluate(0.0) if at_zero is None else at_zero
            return [(a if b is None else a.sub_(b)).div_(e) for a, b in zip(plus, base)]
        return [a.sub_(b).div_(2 * e) for a, b in zip(plus, evaluate(-e))]


def _direction(distance, candidate: list[Tensor], target: list[Tensor]):
    """(D, dD/dc as [(coefficient, tensors)], ||dD/dc||): from the distance's closed form
    where it has one (L2, cosine), else by autograd."""
    found = distance.direction(candidate, target) if isinstance(distance, DirectionalDistance) else None
    if found is not None:
        return found
    with torch.enable_grad():
        leaves = [c.detach().requires_grad_(True) for c in candidate]
        value = distance(leaves, target)
        gradient = torch.autograd.grad(value, leaves)
    return float(value.detach()), [(1.0, gradient)], float(norm(gradient))


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def _fill(gradients: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    """Gradients with None (a variable the loss does not use) as zeros."""
    return [torch.zeros_like(v) if g is None else g for g, v in zip(gradients, like)]
