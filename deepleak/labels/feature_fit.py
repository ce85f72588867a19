"""deepleak's label method for trained victims (``labels=feature_fit``): it fits the batch's
penultimate features to the classifier's gradient, then counts with the exact bias identity.

Classifier z = W h + b, mean cross-entropy over K samples, residuals r_i = p_i - y_i:

    K dL/dW = sum_i r_i h_i^T  (N, M)        K dL/db = sum_i r_i  (N,)

so the counts are exactly n = s - K dL/db with s = sum_i p_i, the batch's summed softmax.
Zero-shot estimates s from dummy inputs, which fails on a trained model (its softmax is
confident and depends on the input). Here s comes from the batch's own features instead:

1. With the residuals of rank K (needs K < N and distinct features), the row space of dL/dW
   is the span of the K features: h_i = V^T a_i with V (K, M) its top right singular vectors.
2. The bias gives one linear constraint: the u = V^T w with (K dL/dW V^T) w = K dL/db has
   h_i . u = 1 for every sample (K dL/dW u = sum_i r_i (h_i . u) must equal sum_i r_i).
3. For coordinates A (K, K), the gradient implies the residuals rho = (K dL/dW V^T) A^{-1}
   (column i is rho_i) and so the labels y_i = softmax(W h_i + b) - rho_i, which must be
   one-hot. Minimise sum_i ||y_i - onehot(argmax y_i)||^2 (+ a penalty keeping h_i inside
   the range of the last activation: [0, 1] for sigmoid, >= 0 for ReLU) from ``restarts``
   starts, keep the lowest, and count n = sum_i softmax(W h_i + b) - K dL/db.

The starts are iLRG's class embeddings dL/dW[c] / dL/db[c] of the classes with the most
negative bias gradient (present classes on a confident model), projected onto the plane of
step 2: the first uses the K most negative, the others draw K among the negative ones.
At the true features the objective is ~1e-9; the fit is non-convex and the restarts do
not always find it (docs/labels.md, trained victims). No dummy inputs, no auxiliary data.

``search`` > 0 (``labels=feature_fit_search``) then searches the label multiset itself: a
candidate is scored by the same fit with its labels held fixed (each sample's start is the
class embedding of its label), which reaches ~1e-6 for the true multiset and stays orders of
magnitude higher for a wrong one. From the restarts' counts, the search moves one label from
one class to another, takes the best move while it lowers the score below 0.9x, and stops
after ``search`` scored candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepleak.errors import DeepleakError
from deepleak.labels.base import counts_to_labels, last_activation, last_layer_gradient, missing_bias
from deepleak.labels.zeroshot_plus import ZeroShotPlus
from deepleak.models import classifier
from deepleak.scenarios.base import Observation

# Where the last activation keeps the penultimate features (lower, upper; None: unbounded).
FEATURE_RANGES = {"sigmoid": (0.0, 1.0), "relu": (0.0, None), "tanh": (-1.0, 1.0)}


@dataclass
class Plane:
    """The fit's geometry for one observation: features h_i = a_i V in the weight gradient's
    top-K row space, on the bias's plane a_i . plane = 1."""

    v: torch.Tensor       # (K, M) the features' span
    g: torch.Tensor       # (N, K) K dL/dW V^T = sum_i r_i a_i^T
    plane: torch.Tensor   # (K,)
    wv: torch.Tensor      # (N, K): logits are A wv^T + b
    b: torch.Tensor       # (N,)
    db: torch.Tensor      # (N,) the bias gradient
    low: float
    high: float | None
    box: float

    def onto(self, a: torch.Tensor) -> torch.Tensor:
        return a - (a @ self.plane - 1)[:, None] * self.plane[None, :] / (self.plane @ self.plane)

    def softmax(self, a: torch.Tensor) -> torch.Tensor:
        return torch.softmax(a @ self.wv.T + self.b, dim=1)                  # (K, N)

    def implied_labels(self, a: torch.Tensor) -> torch.Tensor:
        """Rows y_i = p_i - rho_i: the labels the gradient implies for features A."""
        return self.softmax(a) - torch.linalg.solve(a.T, self.g.T)

    def objective(self, a: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Distance of the implied labels to one-hot: their own argmax, or ``fixed`` (K, N)."""
        labels = self.implied_labels(a)
        onehot = fixed if fixed is not None else torch.nn.functional.one_hot(
            labels.argmax(1), labels.shape[1]).double()
        h = a @ self.v
        outside = torch.relu(self.low - h) ** 2 + (torch.relu(h - self.high) ** 2 if self.high is not None else 0)
        return ((labels - onehot) ** 2).sum() + self.box * outside.sum()

    def counts(self, a: torch.Tensor) -> torch.Tensor:
        """The bias identity n = sum_i p_i - K dL/db at features A."""
        return self.softmax(a).sum(dim=0) - len(a) * self.db


class FeatureFit:
    """Fit K features in the gradient's row space so their implied labels are one-hot; count
    with the bias identity. ``restarts`` starts of at most ``iterations`` L-BFGS steps each;
    ``box`` weighs the penalty on features outside the activation's range; ``rounding`` as in
    counts_to_labels. Where the weight gradient has rank below K (repeated images) the
    features cannot be separated and the counts are zeroshot_plus's. ``search`` > 0: the
    multiset search after the restarts, within ``search`` scored candidates."""

    name = "feature_fit"
    needs = "a bias in the classifier layer, batch_size < num_classes, a sigmoid, ReLU or tanh before it"
    RANK_TOLERANCE = 1e-9  # singular values below this times the largest: rank deficient (float32 gradients sit at ~1e-7 relative)

    SEARCH_GAIN = 0.9  # a move is taken when it lowers the fixed-label score below this times the current one
    SEARCH_TRIES = 2    # noisy starts per scored candidate

    def __init__(self, restarts: int = 8, iterations: int = 200, box: float = 1.0,
                 rounding: str = "largest_remainder", seed: int = 0, search: int = 0) -> None:
        if restarts < 1 or iterations < 1 or search < 0:
            raise DeepleakError(f"labels.restarts and labels.iterations must be >= 1 and labels.search >= 0, "
                                f"got {restarts}, {iterations} and {search}")
        self.restarts = restarts
        self.iterations = iterations
        self.box = box
        self.rounding = rounding
        self.seed = seed
        self.search = search
        if search:  # its own name in metrics.json, the report's routes and refusals
            self.name = "feature_fit_search"

    def unsuited(self, observation: Observation) -> str | None:
        """Why the method cannot work on ``observation`` (one sentence), or None when it can."""
        reason = missing_bias(self.name, observation)
        if reason is not None:
            return reason
        k, n = observation.recipe.num_samples, observation.recipe.num_classes
        if k >= n:
            return (f"the {self.name} label method separates the K features in the gradient's rank, at most "
                    f"num_classes - 1 = {n - 1}, got batch_size={k}; use labels=zeroshot_plus")
        activation = last_activation(observation.model)
        if activation not in FEATURE_RANGES:
            return (f"the {self.name} label method needs a sigmoid, ReLU or tanh before the classifier to bound the "
                    f"features, found {activation or 'none it knows'}; use labels=zeroshot_plus")
        return None

    def check(self, observation: Observation) -> tuple[float, float | None]:
        """Refuse what the method cannot work on; returns the features' range."""
        reason = self.unsuited(observation)
        if reason is not None:
            raise DeepleakError(reason)
        return FEATURE_RANGES[last_activation(observation.model)]

    def plane(self, observation: Observation) -> Plane | None:
        """The fit's geometry, or None where the weight gradient has rank below K."""
        low, high = self.check(observation)
        weight_gradient, bias_gradient = last_layer_gradient(observation)
        dw, db = weight_gradient.detach().double().cpu(), bias_gradient.detach().double().cpu()
        k = observation.recipe.num_samples
        layer = classifier(observation.model)
        _, singular, vh = torch.linalg.svd(dw, full_matrices=False)
        if singular[k - 1] <= self.RANK_TOLERANCE * singular[0]:
            return None
        v = vh[:k]
        g = k * dw @ v.T
        plane = torch.linalg.lstsq(g, (k * db)[:, None], driver="gelsd").solution[:, 0]  # a_i . plane = 1
        return Plane(v, g, plane, layer.weight.detach().double().cpu() @ v.T, layer.bias.detach().double().cpu(),
                     db, low, high, self.box)

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts (N,), float64, before rounding."""
        return self.counts_with_route(observation)[0]

    def counts_with_route(self, observation: Observation, agree: torch.Tensor | None = None,
                          search: bool | None = None) -> tuple[torch.Tensor, str]:
        """(counts, route): the restarts' counts (route ``feature_fit``), then, where ``search``
        (default: ``self.search`` > 0), the multiset search (``feature_fit_search``), skipped
        when the restarts' labels equal ``agree``, another method's (``feature_fit_agreed``).
        Rank below K or every restart diverged: zeroshot_plus's counts (``zeroshot_plus``)."""
        search = bool(self.search) if search is None else search
        geometry = self.plane(observation)
        if geometry is None:
            return ZeroShotPlus().counts(observation), "zeroshot_plus"
        db, k = geometry.db, observation.recipe.num_samples
        safe = torch.where(db.abs() > torch.finfo(torch.float64).tiny, db, torch.ones_like(db))
        starts = geometry.onto(geometry.g / (k * safe[:, None]))            # (N, K) class embeddings dW_c V^T / db_c
        order = torch.argsort(db)
        negative = max(1, int((db < 0).sum()))
        generator = torch.Generator().manual_seed(self.seed)
        scale = float(starts[order[:k]].norm(dim=1).mean()) / k**0.5
        best_loss, best = float("inf"), None
        for restart in range(self.restarts):
            pick = order[:k] if restart == 0 else order[torch.randint(0, negative, (k,), generator=generator)]
            # A little noise keeps a start with a class drawn twice invertible.
            a0 = starts[pick] + 0.02 * scale * torch.randn(k, k, generator=generator, dtype=torch.float64)
            a, loss = self._fit(a0, geometry.objective, geometry.onto)
            if loss < best_loss:
                best_loss, best = loss, a
        if best is None:  # every restart diverged
            return ZeroShotPlus().counts(observation), "zeroshot_plus"
        counts = geometry.counts(best)
        if not search:
            return counts, "feature_fit"
        start = sorted(counts_to_labels(counts.numpy(), k, self.rounding).tolist())
        if agree is not None and start == sorted(agree.tolist()):
            return counts, "feature_fit_agreed"
        # The restarts' best fit already scores its own argmax labels (best_loss).
        own = sorted(geometry.implied_labels(best).argmax(1).tolist())
        known = best_loss if own == start else float("inf")

        def score(labels: list[int]) -> float:
            """The fit with ``labels`` held fixed, from their class embeddings: lowest of the tries."""
            pick = torch.as_tensor(labels)
            fixed = torch.nn.functional.one_hot(pick, len(db)).double()
            lowest = float("inf")
            for _ in range(self.SEARCH_TRIES):
                a0 = starts[pick] + 0.02 * scale * torch.randn(k, k, generator=generator, dtype=torch.float64)
                lowest = min(lowest, self._fit(a0, lambda a: geometry.objective(a, fixed), geometry.onto)[1])
            return lowest

        return torch.as_tensor(self._search(start, score, len(db), known), dtype=torch.float64), "feature_fit_search"

    def _search(self, labels: list[int], score, num_classes: int, known: float = float("inf")) -> list[int]:
        """Class counts (N,) of the best label multiset found from ``labels`` by single moves
        (one label to another class), best move first, within ``self.search`` scored candidates;
        ``known``: a score of ``labels`` already reached (the restarts' fit), kept if lower."""
        current, scored = sorted(labels), 1
        current_score = min(score(current), known)
        while scored < self.search:
            best_move, best_score = None, self.SEARCH_GAIN * current_score
            moves = [(old, new) for old in sorted(set(current)) for new in range(num_classes) if new != old]
            for old, new in moves[: self.search - scored]:
                candidate = list(current)
                candidate.remove(old)
                candidate = sorted([*candidate, new])
                value = score(candidate)
                scored += 1
                if value < best_score:
                    best_move, best_score = candidate, value
            if best_move is None:
                break
            current, current_score = best_move, best_score
        return [current.count(c) for c in range(num_classes)]

    def _fit(self, start: torch.Tensor, objective, onto_plane) -> tuple[torch.Tensor, float]:
        free = start.clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS([free], lr=1, max_iter=self.iterations, history_size=50,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-16)

        def closure():
            optimiser.zero_grad()
            loss = objective(onto_plane(free))
            loss.backward()
            return loss

        try:
            optimiser.step(closure)
        except torch.linalg.LinAlgError:  # a singular A on the way: this start is lost
            return start, float("inf")
        a = onto_plane(free.detach())
        with torch.no_grad():
            loss = float(objective(a))
        return a, loss if loss == loss else float("inf")

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
