"""The replay's client: a differentiable, memory-flat simulation of FedAvg's local SGD.

:class:`Client` re-runs the client's T plain-SGD steps from W_0 on dummy images (functionally,
parameters passed in) and walks them back to give d(objective)/d(images): checkpoints on the
way forward, bisection between them on the way back, so memory stays flat in T
(figures: docs/decisions.md, FedAvg replay memory). Each reverse step is a vector-Jacobian
product through the step's double backward, or two first-order passes with a
:class:`~deepleak.attacks.engine.image_gradient.FiniteDifference` route.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from deepleak.attacks.engine.image_gradient import FiniteDifference, norm
from deepleak.attacks.engine.memory import release_freed_memory

Schedule = list[tuple[torch.Tensor, torch.Tensor]]  # per step: (variable indices (b,), labels (b,))


# Weight sets the reverse pass may store between checkpoints (see Client._reverse): 2 measured
# 1.55-1.69x of E = 1's memory at E = 10 on ResNet-18, 1 no lower, for more recomputation.
STORED_WEIGHTS = 2
# A stretch whose weight sets together take at most this much is stored whole instead of
# bisected further (LeNet: 0.3 MB per set, stretches of up to 13 steps; ResNet-18: never).
SEGMENT_BYTES = 4 * 2**20


class Client:
    """A differentiable, memory-flat simulation of the client's local SGD.

    ``model`` is run functionally (torch.func.functional_call) with the parameters passed in
    and its buffers; ``schedule`` is a list of (variable indices (b,), labels (b,)) per step.
    ``sample_weights`` (T, b), when given, makes step t's loss the weighted sum
    sum_i w[t, i] CE_i over its b samples instead of their mean (the relaxed schedule of
    :class:`FedAvgReplay`'s ``assignment='learned'``); :meth:`backward` then also leaves
    d(objective)/d(sample_weights) in ``sample_weight_grad``. Soft steps always use the
    exact reverse step.
    """

    def __init__(self, model: torch.nn.Module, lr: float, schedule: list[tuple[torch.Tensor, torch.Tensor]],
                 checkpoint_every: int = 0, finite_difference: FiniteDifference | None = None,
                 sample_weights: torch.Tensor | None = None) -> None:
        if sample_weights is not None and finite_difference is not None:
            raise ValueError("a soft schedule uses the exact reverse step")
        self.model = model
        self.sample_weights = sample_weights
        self.sample_weight_grad = None if sample_weights is None else torch.zeros_like(sample_weights)
        # None: each reverse step is a vector-Jacobian product through the step's double
        # backward; a FiniteDifference: two first-order passes instead (_reverse_step_fd).
        self.finite_difference = finite_difference
        self.names = [name for name, _ in model.named_parameters()]
        self.buffers = dict(model.named_buffers())
        self.lr = lr
        self.schedule = schedule
        # 0: small weights (a stored segment of ceil(sqrt(T)) sets fits SEGMENT_BYTES): a
        # checkpoint every ceil(sqrt(T)) steps, each segment stored whole on the way back
        # (LeNet: flat time in T); larger ones: W_0 alone, bisection (memory ~ flat in T).
        steps = max(1, len(schedule))
        set_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        spacing = math.ceil(math.sqrt(steps))
        self.checkpoint_every = checkpoint_every or (spacing if spacing * set_bytes <= SEGMENT_BYTES else steps)

    def loss(self, weights: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the model with ``weights`` on one mini-batch (weighted sum
        with ``sample_weights``)."""
        logits = functional_call(self.model, ({**dict(zip(self.names, weights)), **self.buffers}), (images,))
        if sample_weights is None:
            return F.cross_entropy(logits, labels)
        return (sample_weights * F.cross_entropy(logits, labels, reduction="none")).sum()

    def step(self, weights: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             create_graph: bool = False, sample_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One SGD step W - eta * grad L(W; batch)."""
        loss = self.loss(weights, images, labels, sample_weights)
        gradient = torch.autograd.grad(loss, weights, create_graph=create_graph)
        return [w - self.lr * g for w, g in zip(weights, gradient)]

    def _weights_of(self, t: int) -> torch.Tensor | None:
        return None if self.sample_weights is None else self.sample_weights[t]

    def _leaf(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return [w.detach().requires_grad_(True) for w in weights]

    def run(self, start: list[torch.Tensor], variables: torch.Tensor) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
        """Final weights and the checkpoints {step: weights before that step}, without a graph."""
        weights = [w.detach() for w in start]
        checkpoints: dict[int, list[torch.Tensor]] = {}
        for t, (indices, labels) in enumerate(self.schedule):
            if t % self.checkpoint_every == 0:
                checkpoints[t] = weights
            weights = [w.detach() for w in self.step(self._leaf(weights), variables[indices].detach(), labels,
                                                     sample_weights=self._weights_of(t))]
        return weights, checkpoints

    def backward(self, checkpoints: dict[int, list[torch.Tensor]], variables: torch.Tensor,
                 adjoint: list[torch.Tensor]) -> torch.Tensor:
        """d(objective)/d(variables), given ``adjoint`` = d(objective)/d(W_T)."""
        grad = torch.zeros_like(variables)
        if self.sample_weight_grad is not None:
            self.sample_weight_grad.zero_()
        starts = sorted(checkpoints)
        for index in reversed(range(len(starts))):
            first = starts[index]
            last = starts[index + 1] if index + 1 < len(starts) else len(self.schedule)
            adjoint = self._reverse(first, last, checkpoints[first], variables, adjoint, grad)
        return grad

    def _advance(self, weights: list[torch.Tensor], first: int, last: int, variables: torch.Tensor) -> list[torch.Tensor]:
        """W_last from W_first = ``weights``, without a graph."""
        for t in range(first, last):
            indices, labels = self.schedule[t]
            weights = [w.detach() for w in self.step(self._leaf(weights), variables[indices].detach(), labels,
                                                     sample_weights=self._weights_of(t))]
        return weights

    def _reverse(self, first: int, last: int, weights: list[torch.Tensor], variables: torch.Tensor,
                 adjoint: list[torch.Tensor], grad: torch.Tensor, stores: int | None = None) -> list[torch.Tensor]:
        """Walk steps ``first`` .. ``last - 1`` backwards from ``weights`` = W_first (no graph):
        returns d(objective)/d(W_first) and adds the steps' image gradients to ``grad``.

        Bisection with at most ``stores`` stored weight sets: recompute the weights at the
        midpoint, reverse the second half, then the first. A stretch whose weights take at most
        ``SEGMENT_BYTES`` is stored whole instead; once the stores are used up, each step's
        weights are recomputed from the last stored ones (quadratic in that stretch)."""
        stores = STORED_WEIGHTS if stores is None else stores
        set_bytes = sum(w.numel() * w.element_size() for w in weights)
        while last - first > 1:
            if (last - first) * set_bytes <= SEGMENT_BYTES:
                # A short stretch of small weights: store it whole, one recomputation per step.
                segment = [weights]
                for t in range(first, last - 1):
                    segment.append(self._advance(segment[-1], t, t + 1, variables))
                for t in reversed(range(first + 1, last)):
                    adjoint = self._reverse_step(t, segment.pop(), variables, adjoint, grad)
                break
            if stores == 0:
                for t in reversed(range(first + 1, last)):
                    adjoint = self._reverse_step(t, self._advance(weights, first, t, variables), variables, adjoint, grad)
                break
            middle = (first + last) // 2
            adjoint = self._reverse(middle, last, self._advance(weights, first, middle, variables), variables,
                                    adjoint, grad, stores - 1)
            last = middle
        return self._reverse_step(first, weights, variables, adjoint, grad)

    def _reverse_step(self, t: int, weights: list[torch.Tensor], variables: torch.Tensor,
                      adjoint: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
        """Back-propagate ``adjoint`` (d objective / d W_t+1) through step t from W_t."""
        if self.finite_difference is not None:
            return self._reverse_step_fd(t, weights, variables, adjoint, grad)
        indices, labels = self.schedule[t]
        leaf = self._leaf(weights)
        images = variables[indices].detach().requires_grad_(True)
        inputs = [*leaf, images]
        sample_weights = self._weights_of(t)
        if sample_weights is not None:
            sample_weights = sample_weights.detach().requires_grad_(True)
            inputs.append(sample_weights)
        following = self.step(leaf, images, labels, create_graph=True, sample_weights=sample_weights)
        grads = torch.autograd.grad(following, inputs, grad_outputs=adjoint)
        if sample_weights is not None:
            self.sample_weight_grad[t] += grads[-1].detach()
            grads = grads[:-1]
        grad.index_add_(0, indices, grads[-1].detach())
        adjoint = [g.detach() for g in grads[:-1]]
        del leaf, following, grads
        release_freed_memory(adjoint)
        return adjoint

    def _reverse_step_fd(self, t: int, weights: list[torch.Tensor], variables: torch.Tensor,
                         adjoint: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`_reverse_step` by finite differences. With W' = W - eta grad_W L(W, x) and
        lambda = ``adjoint``, the step's vector-Jacobian product is lambda - eta H lambda for W and
        -eta d/dx <grad_W L, lambda> for x; both are d/da of first-order gradients
        (grad_W L, grad_x L) at W + a lambda, taken by the route's difference scheme."""
        route = self.finite_difference
        indices, labels = self.schedule[t]
        images = variables[indices].detach()
        adjoint_norm = float(norm(adjoint))
        if not (adjoint_norm > 0 and math.isfinite(adjoint_norm)):
            return adjoint  # a zero adjoint passes through unchanged (a non-finite one is caught by the loop)
        e = route.current_step * float(norm(weights)) / adjoint_norm

        def gradients(alpha: float) -> list[torch.Tensor]:
            moved = self._leaf(torch._foreach_add(list(weights), list(adjoint), alpha=alpha) if alpha else weights)
            x = images.clone().requires_grad_(True)
            with torch.enable_grad():
                return list(torch.autograd.grad(self.loss(moved, x, labels), [*moved, x]))

        *hessian_adjoint, image_part = route.derivative(gradients, e)
        grad.index_add_(0, indices, image_part.mul_(-self.lr))
        adjoint = torch._foreach_add(list(adjoint), hessian_adjoint, alpha=-self.lr)
        release_freed_memory(adjoint)
        return adjoint

    def unrolled(self, start: list[torch.Tensor], variables: torch.Tensor) -> list[torch.Tensor]:
        """W_T with the whole graph kept (memory linear in T): the reference for tests."""
        weights = list(start)
        for t, (indices, labels) in enumerate(self.schedule):
            sample_weights = self._weights_of(t)
            weights = self.step(weights, variables[indices], labels, create_graph=True, sample_weights=sample_weights)
        return weights
