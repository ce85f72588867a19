"""The batch order of a FedAvg client, relaxed: which of its N samples go into which of an
epoch's ceil(N/B) local steps.

The server does not know the order (the client reshuffles every epoch from its own seed), yet
where single steps move the weights far it decides much of what the client shares. Attackers
that model the local training can learn it: an epoch's assignment is relaxed to a nonnegative
(steps x samples) matrix whose rows sum to the batch sizes and whose columns sum to 1
(:func:`relaxed_assignment`, Sinkhorn of free logits), every step's loss becomes the
assignment-weighted sum of the per-sample losses (the mean of its batch at a hard assignment),
and the logits are optimised with the attacker's other unknowns; :func:`round_assignment` then
gives the nearest hard order. Used by ``attacks.replay.Replay`` (``assignment='learned'``).
(Tried for ``labels.fedavg.Fitted`` too, the order as one more unknown of the classifier fit:
0.875 against 0.894 label accuracy on the default LeNet at N = 8, B = 4, E = 2, eta = 0.01, 20
clients; not kept.)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from deepleak.scenarios.recipe import step_batches

# Scale of the random logits a learned order starts from (near the uniform assignment).
START_NOISE = 0.1


def batch_sizes(num_samples: int, batch_size: int) -> list[int]:
    """The sizes of one epoch's mini-batches (the last one may be smaller)."""
    return [len(chunk) for chunk in step_batches(torch.arange(num_samples), batch_size)]


def relaxed_assignment(logits: torch.Tensor, sizes: list[int], iterations: int = 30) -> torch.Tensor:
    """Sinkhorn in the log domain: from ``logits`` (S, N), the nonnegative (S, N) matrix with
    row sums ``sizes`` (the epoch's mini-batch sizes) and column sums 1 (every sample used once
    per epoch) closest to exp(logits); differentiable."""
    log_sizes = torch.log(torch.as_tensor(sizes, dtype=logits.dtype, device=logits.device))[:, None]
    for _ in range(iterations):
        logits = logits - torch.logsumexp(logits, dim=1, keepdim=True) + log_sizes
        logits = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    return logits.exp()


def round_assignment(assignment: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The hard assignment nearest to a relaxed one (S, N): per step, the indices (sorted) of
    its ``sizes[s]`` samples, maximising the total weight kept (Hungarian, each step's row
    repeated once per slot)."""
    slots = np.repeat(np.arange(len(sizes)), sizes)
    rows, cols = linear_sum_assignment(-assignment.detach().cpu().numpy()[slots])
    return [torch.as_tensor(np.sort(cols[slots[rows] == s]), dtype=torch.int64) for s in range(len(sizes))]


def start_logits(epochs: int, sizes: list[int], num_samples: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Free logits (E, steps per epoch, N) of a learned order, near uniform, from ``generator``."""
    return START_NOISE * torch.randn((epochs, len(sizes), num_samples), generator=generator, dtype=dtype)


def step_shares(logits: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """(T, N): every step's weight on every sample's loss, the relaxed assignment of each epoch
    divided by its batch sizes (1 / b for the b samples of a step at a hard assignment)."""
    per_step = torch.as_tensor(sizes, dtype=logits.dtype, device=logits.device)[:, None]
    return torch.cat([relaxed_assignment(epoch, sizes) / per_step for epoch in logits])
