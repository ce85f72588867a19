"""Fitting the classifier's local training to a shared FedAvg update (the core of ``Fitted``).

With features h_k (M,) held fixed, logits z = W h + b, and every step the mean over all N
samples (the first-order displacement of any batch order, which the server does not know),
the T local steps of plain SGD at rate eta move the classifier by

    W_T - W_0 = -eta A^T h,   b_T - b_0 = -eta 1^T A,   A = sum_t (softmax(z_t) - y) / N,
    z_t = h W_0^T + b_t - eta (h h^T) A_t,   A_t = sum_{s<t} (softmax(z_s) - y) / N.

So the dynamics and the squared error |W_T - W_0 - dW|^2 = eta^2 tr(A^T G A) +
2 eta tr(A^T Q) + |dW|^2 see the (N, M) features only through P = h W_0^T, Q = h dW^T (N, C)
and G = h h^T (N, N): three products per evaluation instead of two (N, M) x (M, C) products
per local step. Same objective, 5x faster on the default LeNet (M = 2048, T = 4; measured,
identical residuals). Every function works on a batch of K independent fits (leading axis),
which :class:`deepleak.labels.fedavg.FittedSearch` uses to score many label sets at once.
With a second feature set the features move over the steps (start to end), and
:func:`fit_images` derives both from free images under W_0 and W_T
(:class:`deepleak.labels.fedavg.ImageSearch`).

Threat model: the inputs are the public model's classifier, the shared weights and the
public recipe; the features are the attacker's unknowns, never the client's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepleak.errors import DeepleakError
from deepleak.models import classifier_parameter_names, features_and_logits
from deepleak.scenarios.base import Observation
from deepleak.scenarios.recipe import set_bn_mode


def shared_weights(observation: Observation) -> tuple[torch.Tensor, ...]:
    """The client's shared weights W_T; a DeepleakError on an observation without them (FedSGD)."""
    if observation.weights is None:
        raise DeepleakError(f"this label method needs shared weights (scenario=fedavg), got {observation.scenario}")
    return observation.weights


@dataclass(frozen=True)
class ClassifierUpdate:
    """The classifier's part of a FedAvg observation, float64 on the CPU: start weight w0
    (C, M), bias b0 (C,) or None, their observed changes dw, db, and the public recipe's rate,
    step count T and sample count N."""

    w0: torch.Tensor
    dw: torch.Tensor
    b0: torch.Tensor | None
    db: torch.Tensor | None
    lr: float
    steps: int
    num_samples: int

    @classmethod
    def of(cls, observation: Observation) -> "ClassifierUpdate":
        weights = shared_weights(observation)
        weight_name, bias_name = classifier_parameter_names(observation.model)
        names = [name for name, _ in observation.model.named_parameters()]
        start = dict(observation.model.named_parameters())

        def change(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            before = start[name].detach().double().cpu()
            return before, weights[names.index(name)].detach().double().cpu() - before

        w0, dw = change(weight_name)
        b0, db = change(bias_name) if bias_name else (None, None)
        return cls(w0, dw, b0, db, observation.recipe.lr, observation.local_steps, observation.recipe.num_samples)


def feature_range(features: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(to_free, from_free): the map that keeps fitted features in the dummies' range: (0, 1)
    through a sigmoid (sigmoid nets), >= 0 through a softplus (ReLU nets), else unconstrained."""
    low, high = float(features.min()), float(features.max())
    if low >= 0 and high <= 1:
        return (lambda h: torch.logit(h.clamp(1e-4, 1 - 1e-4))), torch.sigmoid
    if low >= 0:
        return (lambda h: h.clamp(min=1e-4).expm1().log()), F.softplus
    return (lambda h: h), (lambda u: u)


def residual(update: ClassifierUpdate, features: torch.Tensor, targets: torch.Tensor,
             end_features: torch.Tensor | None = None, profile: torch.Tensor | None = None) -> torch.Tensor:
    """Relative squared error (K,) of the simulated classifier update against the observed one:
    |dW_sim - dW|^2 / |dW|^2 (+ the same for the bias), for features (K, N, M) and label
    distributions ``targets`` (K, N, C); differentiable in all of them.

    With ``end_features`` (K, N, M) the features move over the T steps, as the body of the
    network trains: step t sees h_t = (1 - a_t) h_start + a_t h_end with a_t = (t / (T - 1))^g,
    g = ``profile`` (K,) (1: linear; below 1: most of the move early, as measured on real
    clients). The error still needs only Gram products: four (N, N) blocks instead of one.
    """
    c = update.w0.shape[0]
    ends = [features] if end_features is None else [features, end_features]
    projected = [h @ torch.cat([update.w0, update.dw]).T for h in ends]  # (K, N, 2C): P and Q per end
    gram = [[hi @ hj.transpose(1, 2) for hj in ends] for hi in ends]
    totals = [torch.zeros_like(projected[0][..., :c]) for _ in ends]  # R_e = sum_t w_e(t) A_t
    bias = update.b0.expand(len(features), c) if update.b0 is not None else None
    for t in range(update.steps):
        if end_features is None:
            weights = [1.0]
        else:
            a = (t / max(update.steps - 1, 1)) ** (profile[:, None, None] if profile is not None else 1.0)
            weights = [1 - a, a]
        # logits of h_t under W_t = W_0 - eta sum_{s<t} A_s^T h_s
        logits = sum(w * (p[..., :c] - update.lr * sum(g @ r for g, r in zip(row, totals)))
                     for w, p, row in zip(weights, projected, gram))
        if bias is not None:
            logits = logits + bias[:, None, :]
        step = (torch.softmax(logits, dim=-1) - targets) / update.num_samples
        totals = [r + w * step for r, w in zip(totals, weights)]
        if bias is not None:
            bias = bias - update.lr * step.sum(dim=1)
    dw_norm = update.dw.pow(2).sum().clamp(min=1e-300)
    # |-eta sum_e R_e^T h_e - dW|^2, expanded: the (C, M) product is never formed.
    quadratic = sum((ri * (g @ rj)).sum(dim=(1, 2)) for ri, row in zip(totals, gram) for g, rj in zip(row, totals))
    linear = sum((r * p[..., c:]).sum(dim=(1, 2)) for r, p in zip(totals, projected))
    error = (update.lr ** 2 * quadratic + 2 * update.lr * linear + update.dw.pow(2).sum()) / dw_norm
    if bias is not None:
        error = error + (bias - update.b0 - update.db).pow(2).sum(dim=1) / update.db.pow(2).sum().clamp(min=1e-300)
    return error


def fit(update: ClassifierUpdate, features: torch.Tensor, targets: torch.Tensor | None, label_logits: torch.Tensor | None,
        iterations: int, lr: float, desc: str = "fitted labels") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Adam on the features (K, N, M), starting from ``features`` and kept in their range
    (:func:`feature_range`), with the labels either fixed (``targets`` (K, N, C)) or free
    (``label_logits`` (K, N, C), softmaxed). The K fits are independent (Adam is elementwise).
    Returns (final residual (K,), final label distributions or None)."""
    to_free, from_free = feature_range(features)
    free = to_free(features).clone().requires_grad_(True)
    variables = [free]
    if label_logits is not None:
        label_logits = label_logits.clone().requires_grad_(True)
        variables.append(label_logits)
    optimizer = torch.optim.Adam(variables, lr=lr)
    errors = None
    for _ in tqdm(range(iterations), desc=desc, leave=False, disable=None):
        y = torch.softmax(label_logits, dim=-1) if label_logits is not None else targets
        errors = residual(update, from_free(free), y)
        optimizer.zero_grad()
        errors.sum().backward()
        optimizer.step()
    assert errors is not None
    labels = torch.softmax(label_logits.detach(), dim=-1) if label_logits is not None else None
    return errors.detach(), labels


def fit_images(update: ClassifierUpdate, observation: Observation, images: torch.Tensor, targets: torch.Tensor,
               iterations: int, lr: float, profile: float = 0.5, desc: str = "image fits") -> torch.Tensor:
    """Adam on K sets of N free images (K, N, C, H, W), kept in [0, 1] through a sigmoid, and
    on one profile exponent g per set (in (0, 1) through a sigmoid, from ``profile``), with
    the labels fixed (``targets`` (K, N, C)). The
    features are the images' features under the public model at W_0 and at the shared W_T,
    blended over the T steps (:func:`residual` with ``end_features``): the body's training
    moves them, and only features that some image has at both ends are allowed. Returns the
    final residual (K,)."""
    k, n = targets.shape[:2]
    model = set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode)
    start = [p.detach() for p in observation.model.parameters()]
    end = [w.detach() for w in shared_weights(observation)]
    free = torch.logit(images.reshape(k * n, *images.shape[2:]).clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    exponent = torch.full((k,), math.log(profile / (1 - profile)), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([free, exponent], lr=lr)
    errors = None
    for _ in tqdm(range(iterations), desc=desc, leave=False, disable=None):
        x = torch.sigmoid(free)
        h_start, h_end = (features_and_logits(model, x, w)[0].double().cpu().reshape(k, n, -1) for w in (start, end))
        errors = residual(update, h_start, targets, h_end, torch.sigmoid(exponent))
        optimizer.zero_grad()
        errors.sum().backward()
        optimizer.step()
    assert errors is not None
    return errors.detach()


__all__ = ["ClassifierUpdate", "feature_range", "fit", "fit_images", "residual", "shared_weights"]
