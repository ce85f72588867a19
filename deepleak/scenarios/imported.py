"""``scenario=imported``: attack an update a real client shared (Flower, plain PyTorch, ...).

``deepleak attack +scenario=imported scenario.path=DIR`` reads ``DIR/manifest.yaml``
(:mod:`deepleak.scenarios.manifest`) and the files it names
(:mod:`deepleak.scenarios.update_files`): the global model the client received, its update
(a gradient, FedSGD, or its weights after local plain SGD, FedAvg), the public recipe and,
optionally, the auditor's own copy of the client's data to score the attack with.

The model is a deepleak model option (``{name: lenet, width: 12}``) or any importable
``nn.Module`` class (``{_target_: package.Net, ...}``: its keyword arguments are plain values,
the manifest's ``num_classes`` and ``image_shape`` are added when the constructor takes them
and they are not given, and nothing but an ``nn.Module`` class is ever called), loaded with
the global weights. When
the client normalised its pixels, the model is wrapped in
:class:`~deepleak.models.normalized.Normalized`, so the attack reconstructs pixels in [0, 1].

With truth the client's computation is replayed on it (:func:`regenerate`): a cosine under
0.99 between the replayed and the shared update means the manifest does not describe what
the client did (a warning names the usual causes).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.models import build_model, classifier
from deepleak.models.normalized import Normalized
from deepleak.scenarios.base import ImportedClient, Observation, PrivateBatch, Recipe
from deepleak.scenarios.manifest import Manifest, load_manifest
from deepleak.scenarios.recipe import local_sgd, set_bn_mode
from deepleak.scenarios.update_files import read_gradient, read_state

log = logging.getLogger(__name__)

REGENERATION_MIN_COSINE = 0.99
MAX_ORDERS = 64  # FedAvg regeneration: batch orders tried when the client's shuffle is unknown


class Imported:
    """A client update imported from ``path`` (a folder holding ``manifest.yaml``)."""

    name = "imported"

    def __init__(self, path: str | None = None) -> None:
        if not path:
            raise DeepleakError("scenario=imported needs scenario.path=DIR, the folder holding manifest.yaml and its files")
        self.path = str(path)
        self._manifest: Manifest | None = None

    @property
    def metadata_leaked(self) -> dict[str, Any]:
        """Nothing beyond the update and the manifest's recipe; shared BN buffers are recorded
        in the threat model."""
        return {}

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.path)
        return self._manifest

    # ------------------------------------------------------------------ checks
    def check(self, needs: Mapping[str, Sequence[str]] | None = None) -> int:
        """Read every file and match it to the model (one-line DeepleakError on the first
        problem), then refuse a label method or attack whose needs the files cannot meet."""
        manifest = self.manifest
        for user, wanted in (needs or {}).items():
            for need in wanted:
                self._meet(need, user, manifest)
        self._read(manifest, torch.device("cpu"))
        return manifest.num_examples

    def _meet(self, need: str, user: str, manifest: Manifest) -> None:
        where = manifest.path
        if need == "weights" and manifest.kind != "weights":
            raise DeepleakError(f"{user} needs the client's weights after local training: {where} has kind: gradient; "
                                "it needs kind: weights with an 'update' file and the recipe (local_batch_size, local_epochs, lr)")
        if need == "truth" and manifest.truth is None:
            raise DeepleakError(f"{user} needs the true labels: {where} has no 'truth' (images and labels)")
        if need == "snapshots":
            raise DeepleakError(f"{user} needs the client's intermediate weights (snapshots), which an imported update "
                                "does not hold; use attack=fedavg_replay or attack=geng")
        if need == "gradient" and manifest.kind != "gradient":
            raise DeepleakError(f"{user} needs a shared gradient: {where} has kind: weights")

    # ------------------------------------------------------------------ loading
    def load(self, device: torch.device) -> ImportedClient:
        """The observation, the truth (None without) and the shapes, on ``device``; with truth
        the regeneration check runs and a poor match is logged as a warning."""
        manifest = self.manifest
        observation, truth = self._read(manifest, device)
        regeneration = None
        if truth is not None:
            regeneration = regenerate(observation, truth)
            log.info("update regeneration from the truth: cosine %.6f, relative error %.3g (%s)",
                     regeneration["cosine"], regeneration["relative_error"], regeneration["order"])
            if regeneration["cosine"] < REGENERATION_MIN_COSINE:
                log.warning(
                    "replaying the manifest's recipe on the truth reproduces the shared update with cosine %.4f only "
                    "(< %.2f): the manifest may not describe what the client did; likely causes: a wrong lr, hidden "
                    "momentum or weight decay, data augmentation, a loss other than mean cross-entropy, dropout, "
                    "a wrong bn_mode or normalization, or truth images or labels that are not the client's",
                    regeneration["cosine"], REGENERATION_MIN_COSINE)
        source = f"imported:{manifest.root}"
        return ImportedClient(observation, truth, manifest.num_classes, manifest.image_shape, source, regeneration)

    def _read(self, manifest: Manifest, device: torch.device) -> tuple[Observation, PrivateBatch | None]:
        inner = build_manifest_model(manifest)
        start = read_state(inner, manifest.global_file, "global")
        _assign(inner, start)
        check_model_runs(inner, manifest)
        metadata: dict[str, Any] = {}
        gradient = weights = None
        if manifest.kind == "gradient":
            gradient = read_gradient(inner, manifest.update_file, "gradient")
        else:
            end = read_state(inner, manifest.update_file, "update")
            weights = end.parameters
            if end.buffers:
                metadata["bn_buffers"] = end.buffers
        model: nn.Module = inner
        if manifest.normalization is not None:
            model = Normalized(inner, manifest.normalization.mean, manifest.normalization.std)
        model = model.to(device)
        recipe = Recipe(
            num_samples=manifest.num_examples,
            batch_size=manifest.num_examples if manifest.kind == "gradient" else int(manifest.local_batch_size),
            num_classes=manifest.num_classes,
            image_shape=manifest.image_shape,
            epochs=1 if manifest.kind == "gradient" else int(manifest.local_epochs),
            lr=0.0 if manifest.kind == "gradient" else float(manifest.lr),
            bn_mode=manifest.bn_mode,
        )
        observation = Observation(
            scenario=self.name,
            model=model,
            recipe=recipe,
            gradient=None if gradient is None else tuple(g.to(device) for g in gradient),
            weights=None if weights is None else tuple(w.to(device) for w in weights),
            metadata={key: {n: t.to(device) for n, t in value.items()} for key, value in metadata.items()},
        )
        truth = load_truth(manifest)
        if truth is not None:
            truth = PrivateBatch(truth.images.to(device), truth.labels.to(device))
        return observation, truth


def fresh(client: ImportedClient) -> ImportedClient:
    """The client with its own copy of the server's model (one per trial)."""
    return client._replace(observation=replace(client.observation, model=copy.deepcopy(client.observation.model)))


# ---------------------------------------------------------------------- the model
def build_manifest_model(manifest: Manifest) -> nn.Module:
    """The manifest's model (before the global weights are loaded)."""
    from hydra._internal.utils import _locate  # noqa: PLC0415
    from omegaconf import OmegaConf  # noqa: PLC0415

    from deepleak.config import check_types, config_dir  # noqa: PLC0415

    where = manifest.path
    spec = dict(manifest.model)
    if "name" in spec:
        name = spec.pop("name")
        options = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
        if name not in options:
            raise DeepleakError(f"{where}: model.name {name!r} is not a deepleak model; choose one of {', '.join(options)}, "
                                "or give the class as model._target_")
        node = OmegaConf.merge(OmegaConf.load(config_dir() / "model" / f"{name}.yaml"), OmegaConf.create(spec))
        check_types(node, path="model")
        try:
            return build_model(node, manifest.num_classes, manifest.image_shape, seed=0)
        except DeepleakError:
            raise
        except Exception as error:
            raise DeepleakError(f"{where}: cannot build model {name} with {spec}: {_first_line(error)}") from None
    target_name = spec.pop("_target_")
    try:
        target = _locate(target_name)
    except Exception as error:
        cause = error.__cause__ or error
        raise DeepleakError(f"{where}: model._target_ {target_name} cannot be imported ({_first_line(cause)}); "
                            "put its package on PYTHONPATH") from None
    if not (inspect.isclass(target) and issubclass(target, nn.Module)):
        raise DeepleakError(f"{where}: model._target_ {target_name} is not an nn.Module class")
    try:
        accepted = inspect.signature(target).parameters
    except (TypeError, ValueError):
        accepted = {}
    # A constructor that takes num_classes or image_shape gets the manifest's unless given.
    for key, value in (("num_classes", manifest.num_classes), ("image_shape", list(manifest.image_shape))):
        if key in accepted and key not in spec:
            spec[key] = value
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return target(**spec)
    except Exception as error:
        raise DeepleakError(f"{where}: cannot build model {target_name}({_arguments(spec)}): {_first_line(error)}") from None
    finally:
        torch.random.set_rng_state(generator_state)


def check_model_runs(model: nn.Module, manifest: Manifest) -> None:
    """The model takes inputs of image_shape, gives num_classes logits and ends in a Linear layer."""
    where = manifest.path
    classifier(model)  # a one-line refusal of a model without a linear classifier
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            out = probe(torch.zeros(2, *manifest.image_shape))
    except Exception as error:
        raise DeepleakError(f"{where}: the model cannot run on inputs of image_shape {list(manifest.image_shape)}: "
                            f"{_first_line(error)}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (2, manifest.num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DeepleakError(f"{where}: the model gives outputs of shape {shape} for 2 inputs; "
                            f"num_classes is {manifest.num_classes}, so [2, {manifest.num_classes}] is expected")


def _assign(model: nn.Module, state: Any) -> None:
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), state.parameters):
            parameter.copy_(value)
        buffers = dict(model.named_buffers())
        for name, value in state.buffers.items():
            buffers[name].copy_(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _arguments(spec: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in spec.items())


# ---------------------------------------------------------------------- the truth
def load_truth(manifest: Manifest) -> PrivateBatch | None:
    """The truth images (sorted by name, pixels in [0, 1], resized to image_shape if needed)
    and labels, on the CPU; None without ``truth``."""
    if manifest.truth is None:
        return None
    from PIL import Image  # noqa: PLC0415

    channels, height, width = manifest.image_shape
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise DeepleakError(f"{manifest.path}: truth images need 1, 3 or 4 channels in image_shape, got {channels}")
    images = []
    for path in manifest.truth.images:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
                if image.size != (width, height):
                    log.info("truth image %s is %dx%d; resized to %dx%d", path.name, *image.size, width, height)
                    image = image.resize((width, height), Image.BILINEAR)
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        except Exception as error:
            raise DeepleakError(f"cannot read truth image {path}: {_first_line(error)}") from None
        images.append(pixels.view(height, width, channels).permute(2, 0, 1).float() / 255.0)
    return PrivateBatch(torch.stack(images), torch.tensor(manifest.truth.labels, dtype=torch.int64))


# ---------------------------------------------------------------------- regeneration
def regenerate(observation: Observation, truth: PrivateBatch) -> dict[str, Any]:
    """Replay the client's computation on the truth from W_0 with the observation's recipe
    and compare with the shared update: ``cosine`` and ``relative_error`` (||replayed - shared||
    / ||shared||) of the gradient (FedSGD) or of the weight change W_T - W_0 (FedAvg).

    FedAvg's shuffle order is the client's secret: up to MAX_ORDERS batch orders are tried
    (every distinct assignment of samples to steps) and the best is kept; beyond that only
    the data order (identity). ``order`` says which."""
    recipe = observation.recipe
    start = [p.detach() for p in observation.model.parameters()]
    if observation.gradient is not None:
        client = set_bn_mode(copy.deepcopy(observation.model), recipe.bn_mode)
        loss = F.cross_entropy(client(truth.images), truth.labels)
        replayed = [g.detach() for g in torch.autograd.grad(loss, list(client.parameters()))]
        return {**_compare(replayed, list(observation.gradient)), "order": "one batch (FedSGD)"}
    shared = [w - s for w, s in zip(observation.weights, start)]
    orders, note = candidate_orders(recipe.num_samples, recipe.batch_size, recipe.epochs)
    best: dict[str, Any] | None = None
    for epochs in orders:
        client = set_bn_mode(copy.deepcopy(observation.model), recipe.bn_mode)
        for order in epochs:
            index = torch.as_tensor(order, device=truth.labels.device)
            local_sgd(client, truth.images[index], truth.labels[index], 1, recipe.batch_size, recipe.lr, None)
        replayed = [p.detach() - s for p, s in zip(client.parameters(), start)]
        found = _compare(replayed, shared)
        if best is None or found["cosine"] > best["cosine"]:
            best = found
    assert best is not None
    return {**best, "order": note, "orders_tried": len(orders)}


def candidate_orders(n: int, batch: int, epochs: int) -> tuple[list[tuple[tuple[int, ...], ...]], str]:
    """The per-epoch sample orders to replay: every distinct assignment of the N samples to
    the steps of each epoch (mini-batch contents in step order) when there are at most
    MAX_ORDERS combinations over all epochs, else the data order alone; and a note saying which."""
    identity = tuple(range(n))
    sizes = [len(range(start, min(start + batch, n))) for start in range(0, n, batch)]
    per_epoch = math.factorial(n) // math.prod(math.factorial(size) for size in sizes)
    if per_epoch == 1:
        return [(identity,) * epochs], "the data order (the only one)"
    if per_epoch ** epochs > MAX_ORDERS or n > 8:
        return [(identity,) * epochs], (f"the data order: the client's shuffle is unknown and {per_epoch}^{epochs} "
                                        "batch orders are too many to try")
    distinct: dict[tuple[frozenset[int], ...], tuple[int, ...]] = {}
    for permutation in itertools.permutations(range(n)):
        key = tuple(frozenset(permutation[start:start + batch]) for start in range(0, n, batch))
        distinct.setdefault(key, permutation)
    one_epoch = list(distinct.values())
    combos = [tuple(c) for c in itertools.product(one_epoch, repeat=epochs)]
    return combos, f"the best of {len(combos)} batch orders (the client's shuffle is unknown)"


def _compare(replayed: list[torch.Tensor], shared: list[torch.Tensor]) -> dict[str, float]:
    a = torch.cat([t.reshape(-1).double().cpu() for t in replayed])
    b = torch.cat([t.reshape(-1).double().cpu() for t in shared])
    norm = float(b.norm())
    cosine = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))
    return {"cosine": cosine, "relative_error": float((a - b).norm()) / norm if norm > 0 else float("inf")}
