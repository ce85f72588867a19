"""The attacker's view of a defended update: what it believes it is attacking.

An adaptive attacker knows the client's defence from its public parameters (the
Observation's ``defence``); a naive one attacks the update as if it were undefended. Two
things follow from that choice, here: the :class:`DefenceModel` that the matching objective
goes through, and, under secure aggregation, how many clients' samples the attacker thinks
are behind the mean (n x K adaptive, K naive).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from deepleak.attacks.parts.defence_model import DefenceModel
from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation

# Defences whose adaptive attack changes the matching objective: attacks that cannot run such
# an objective (finite-difference image gradient, batched restarts) refuse them up front.
OBJECTIVE_DEFENCES = ("noise", "clip", "prune", "quantize", "soteria", "dp_sgd")


def attacker_defence_model(observation: Observation, adaptive: bool) -> DefenceModel:
    """The attacker's model of the observation's defence, in the units of the target it
    matches: the gradient itself (FedSGD) or the pseudo-gradient (W_0 - W_T) / (lr T) (FedAvg,
    a scale of 1 / (lr T) on the shared update, over T steps of the recipe's batch)."""
    recipe = observation.recipe
    shares_weights = observation.gradient is None and observation.weights is not None
    scale = 1.0 / (recipe.lr * observation.local_steps) if shares_weights else 1.0
    return DefenceModel(observation.defence, adaptive=adaptive, scale=scale,
                        steps=observation.local_steps, step_batch_size=recipe.batch_size)


def attacker_view(observation: Observation, adaptive: bool) -> Observation:
    """The observation as the attacker treats it. Under ``secagg`` with n clients the shared
    update is the mean of n clients' (the Observation's recipe counts all n x K samples);
    the naive attacker takes it for one client's K samples (FedAvg: N samples in
    mini-batches of B), the adaptive one keeps n x K. Anything else: unchanged."""
    defence: dict[str, Any] = observation.defence
    clients = int(defence.get("clients", 1)) if defence.get("name") == "secagg" else 1
    if adaptive or clients == 1:
        return observation
    recipe = observation.recipe
    if recipe.num_samples % clients or recipe.batch_size % clients:
        raise DeepleakError(f"secagg over {clients} clients needs equal clients; the recipe counts "
                            f"{recipe.num_samples} samples in steps of {recipe.batch_size}")
    one = dataclasses.replace(recipe, num_samples=recipe.num_samples // clients, batch_size=recipe.batch_size // clients)
    return dataclasses.replace(observation, recipe=one)


def check_attack_route(exact_image_gradient: bool, batched_restarts: bool, public: dict[str, Any], adaptive: bool) -> None:
    """Refuse, before any work, an adaptive attack whose step cannot run the defence-aware
    objective: the finite-difference image gradient and batched restarts evaluate the
    recipe's own distance."""
    if not adaptive or public.get("name") not in OBJECTIVE_DEFENCES:
        return
    if not exact_image_gradient:
        raise DeepleakError(f"the adaptive attack on defence={public['name']} needs attack/image_gradient=double_backward "
                            "(finite differences evaluate the plain distance); or set attack.adaptive=false")
    if batched_restarts:
        raise DeepleakError(f"the adaptive attack on defence={public['name']} runs its restarts one by one; "
                            "set attack.batched_restarts=false (or attack.adaptive=false)")
