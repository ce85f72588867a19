"""Client-side defences: what an FL client may do to its update before sharing it.

Each option is a :class:`Defence` built from ``conf/defence/<name>.yaml``:

- :class:`NoDefence` (``none``): the plain update;
- :class:`Noise` (``noise``): Gaussian or Laplace noise on every entry;
- :class:`Clip` (``clip``): the whole update scaled to norm <= max_norm;
- :class:`Prune` (``prune``): per tensor, the smallest-magnitude fraction zeroed;
- :class:`Quantize` (``quantize``): per tensor, 2**bits uniform levels;
- :class:`Soteria` (``soteria``): the classifier's weight-gradient columns of the most
  input-revealing representation units zeroed (Sun et al., 2021);
- :class:`DPSGD` (``dp_sgd``): per-sample clipping and Gaussian noise in every local step,
  with Opacus's (epsilon, delta);
- :class:`SecAgg` (``secagg``): the server sees only :func:`weighted_mean` of several clients.

Layering: this package imports only ``deepleak.errors``, torch and (lazily, for accounting)
opacus; not even ``deepleak.models``, which imports ``deepleak.config``, which imports this
package (its default defence).
"""

from __future__ import annotations

from deepleak.defences.base import (
    ClientContext,
    Defence,
    DefenceLike,
    NoDefence,
    mean_loss_gradient,
)
from deepleak.defences.clip import Clip
from deepleak.defences.dp_sgd import DPSGD
from deepleak.defences.noise import Noise
from deepleak.defences.prune import Prune
from deepleak.defences.quantize import Quantize
from deepleak.defences.secagg import SecAgg, weighted_mean
from deepleak.defences.soteria import Soteria

DEFENCES: dict[str, type[Defence]] = {
    cls.name: cls for cls in (NoDefence, Noise, Clip, Prune, Quantize, Soteria, DPSGD, SecAgg)
}

__all__ = [
    "DEFENCES",
    "DPSGD",
    "ClientContext",
    "Clip",
    "Defence",
    "DefenceLike",
    "NoDefence",
    "Noise",
    "Prune",
    "Quantize",
    "SecAgg",
    "Soteria",
    "mean_loss_gradient",
    "weighted_mean",
]
