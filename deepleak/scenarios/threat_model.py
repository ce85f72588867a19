"""The threat model of a run, as recorded in metrics.json (``threat_model``).

One function builds it from the Observation (what the server received) and whether the
attack was scored against a truth, for simulated and imported clients alike.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deepleak.models.normalized import Normalized
from deepleak.scenarios.base import Observation

SIMULATED = ("fedsgd", "fedavg")


def threat_model(observation: Observation, scored: bool, defence: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the server received and knew, for metrics.json:

    - ``client``: simulated (deepleak played it) or imported (a real client's files);
    - ``update``: gradient (FedSGD) or weights (FedAvg);
    - ``recipe_known``: the public recipe fields, named as in an import manifest;
    - ``normalization``: the client's pixel normalisation, applied inside the model (null: none);
    - ``batch_norm``: whether the model has batch norm and whether the client shared its buffers;
    - ``step_labels_leaked``: FedAvg's per-step labels (``leak_metadata``);
    - ``snapshots_shared``: intermediate weights (``snapshot_every``), and how many;
    - ``defence``: its name and public parameters (``none``: no defence);
    - ``truth_for_scoring``: whether the attack was scored against the client's data.
    """
    recipe = observation.recipe
    weights = observation.gradient is None and observation.weights is not None
    known: dict[str, Any] = {"num_examples": recipe.num_samples}
    if weights:
        known.update(local_batch_size=recipe.batch_size, local_epochs=recipe.epochs, lr=recipe.lr)
    known.update(bn_mode=recipe.bn_mode, loss=recipe.loss, num_classes=recipe.num_classes,
                 image_shape=list(recipe.image_shape))
    model = observation.model
    normalization = None
    if isinstance(model, Normalized):
        normalization = {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}
    has_bn = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    snapshots = observation.metadata.get("snapshots") or ()
    return {
        "client": "simulated" if observation.scenario in SIMULATED else "imported",
        "update": "weights" if weights else "gradient",
        "global_model_known": True,
        "recipe_known": known,
        "normalization": normalization,
        "batch_norm": {"in_model": has_bn, "buffers_shared": bool(observation.metadata.get("bn_buffers"))},
        "step_labels_leaked": "step_labels" in observation.metadata,
        "snapshots_shared": len(snapshots) > 0,
        "snapshots": len(snapshots),
        "defence": dict(defence) if defence else {"name": "none"},
        "truth_for_scoring": bool(scored),
    }
