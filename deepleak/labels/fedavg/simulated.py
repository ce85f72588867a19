"""``labels=fedavg_simulated``: counts from a simulated client (deepleak's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepleak.errors import DeepleakError
from deepleak.labels.base import counts_to_labels, dummy_images
from deepleak.labels.fedavg.common import _row_sums, simulate_training
from deepleak.labels.fedavg.interpolated import Interpolated
from deepleak.scenarios.base import Observation


class Simulated:
    """Counts from a simulated client (deepleak's FedAvg estimate; zero-shot in spirit).

    The class-n row sum of the pseudo-gradient is S_n = (1/T) sum_t (1/B) sum_{k in b_t}
    (p_tkn - y_kn) O_tk. Split it per sample: a sample of class n pulls S_n down by its
    *fit deficit* w_k = (1/T) sum_{t: k in b_t} (1 - p_tk,y_k) O_tk / B, and pushes every
    other class m up by r_km = (1/T) sum_{t: k in b_t} p_tkm O_tk / B. With w the mean deficit
    and r_n the mean push on class n of samples of other classes,

        S_n = -lambda_n w + (N - lambda_n) r_n   =>   lambda_n = (N r_n - S_n) / (w + r_n).

    w and r_n come from replaying the recipe (E, B, eta, BN mode) from W_0 on ``repeats``
    sets of N uniform dummy inputs labelled with the current estimate (the Interpolated
    estimate first), ``iterations`` times (passes after the second are damped by ``damping``).
    With the true labels in the simulation this is near exact (measured: 1.0 label accuracy
    at E = 10, eta = 0.01 and 0.1 on the grid of scripts/fedavg_labels.py); from a wrong start
    the fixed-point iteration can stall on a self-consistent wrong label set. At one step with
    an untrained model this is the zero-shot formula; as the client fits its samples, their
    p_y rises and w shrinks, which is what the dummy statistics of the other estimates miss.
    """

    requires = ("weights",)  # FedAvg's shared weights (checked for an imported update before any work)

    name = "simulated"

    def __init__(
        self,
        iterations: int = 4,
        repeats: int = 2,
        damping: float = 0.5,
        rounding: str = "largest_remainder",
        seed: int = 0,
    ) -> None:
        if iterations < 1:
            raise DeepleakError(f"labels.iterations must be >= 1, got {iterations}")
        if repeats < 1:
            raise DeepleakError(f"labels.repeats must be >= 1, got {repeats}")
        if not 0 <= damping < 1:
            raise DeepleakError(f"labels.damping must be in [0, 1), got {damping}")
        self.iterations = int(iterations)
        self.repeats = int(repeats)
        self.damping = float(damping)
        self.rounding = rounding
        self.seed = int(seed)
        self.first = Interpolated(seed=seed)

    def profile(self, observation: Observation, labels: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(w, push (C,), others (C,)) summed over one simulated client with ``labels`` (N,):
        the total fit deficit, the total push on each class from samples of other classes,
        and how many samples of other classes there are."""
        recipe = observation.recipe
        n, c = recipe.num_samples, recipe.num_classes
        images = dummy_images(observation, n, self.seed + 1000 * repeat + 1)
        labels = labels.to(images.device)
        _, steps = simulate_training(observation, images, labels, self.seed + 1000 * repeat + 2, record=True)
        scale = 1.0 / (len(steps) * recipe.batch_size)
        onehot = F.one_hot(labels.cpu(), c).double()
        deficit = 0.0
        push = torch.zeros(c, dtype=torch.float64)
        for step in steps:
            y = onehot[step["indices"].cpu()]
            o, p = step["O"].cpu(), step["p"].cpu()
            deficit += float((((1 - p) * y).sum(dim=1) * o).sum()) * scale
            push += ((p * (1 - y)) * o[:, None]).sum(dim=0) * scale
        others = len(labels) - onehot.sum(dim=0)  # samples of other classes
        return deficit, push, others

    def solve(self, observation: Observation, labels: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The counts (C,) that the linear model fitted on clients simulated with ``labels``
        (N,) gives for the observed class row sums ``s`` (C,)."""
        n = observation.recipe.num_samples
        deficit, push, others = 0.0, torch.zeros_like(s), torch.zeros_like(s)
        for repeat in range(self.repeats):
            d, u, o = self.profile(observation, labels, repeat)
            deficit, push, others = deficit + d, push + u, others + o
        w = deficit / (n * self.repeats)  # mean fit deficit per sample
        r = push / others.clamp(min=1)  # mean push on class n per sample of another class
        return (n * r - s) / (w + r)

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts (num_classes,)."""
        s = _row_sums(observation)
        n = observation.recipe.num_samples
        counts = self.first.counts(observation)
        for iteration in range(self.iterations):
            update = self.solve(observation, counts_to_labels(counts.numpy(), n, self.rounding), s)
            # The first two passes jump; later ones are damped (the map can oscillate).
            counts = update if iteration < 2 else self.damping * counts + (1 - self.damping) * update
            if not torch.isfinite(counts).all():
                raise DeepleakError("simulated label counts are not finite: the shared weights hold NaN or inf")
        return counts

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
