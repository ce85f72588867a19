"""``deepleak attack``: one run = ``trials`` private batches, each attacked end to end.

The data path reads top to bottom in :func:`run_trial`:
data -> private batch -> scenario (the client) -> Observation -> labels -> attack ->
metrics. Only the metrics block sees the private batch after the scenario has run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from deepleak import metrics
from deepleak.attacks.none import NoAttack
from deepleak.attacks.parts.defence_view import attacker_view
from deepleak.attacks.parts.protocols import DefenceAware
from deepleak.config import make, make_defence
from deepleak.defences import NoDefence, SecAgg
from deepleak.errors import DeepleakError
from deepleak.labels.base import RevealsTruth, RoutesLabels
from deepleak.models import build_model
from deepleak.models.checkpoints import victim_stage
from deepleak.runs import save_images, write_metrics
from deepleak.runtime import preload_optimizers, resolve_device, trial_seeds
from deepleak.scenarios.base import ImportedClient, Observation, PrivateBatch, ProvidesClient
from deepleak.scenarios.defended import public_defence
from deepleak.scenarios.imported import fresh
from deepleak.scenarios.secure_aggregation import aggregate, union
from deepleak.scenarios.threat_model import threat_model

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "label_accuracy", "label_floor", "count_accuracy", "count_accuracy_present", "existence_accuracy",
    "exact_batch", "restored_label_accuracy", "attack_label_accuracy", "evaluations", "psnr_mean", "ssim_mean", "lpips_mean", "mse_mean", "gradient_distance",
    "attack_seconds",
)


def validate(cfg: DictConfig) -> None:
    """Checks that need no data (an imported update's files are read and checked here); run
    before any work."""
    scenario = make(cfg.scenario)
    imported = isinstance(scenario, ProvidesClient)
    # An imported client: K or N is the manifest's num_examples; every file is read and checked.
    batch_size = scenario.check(requirements(cfg)) if imported else cfg.batch_size
    if imported and cfg.get("export_update"):
        raise DeepleakError("export_update=true writes a simulated client's update in the import format; "
                            "scenario=imported reads one that is already in it")
    defence = make_defence(cfg)  # its parameters are checked by its constructor
    if isinstance(defence, SecAgg) and imported:
        raise DeepleakError("defence=secagg simulates n clients; an imported update is one client's "
                            "(import the aggregate with defence=none)")
    if not isinstance(defence, NoDefence) and OmegaConf.select(cfg, "scenario.snapshot_every", default=0):
        raise DeepleakError("scenario.snapshot_every shares undefended intermediate weights; use it with defence=none")
    if isinstance(defence, SecAgg) and cfg.get("export_update"):
        raise DeepleakError("export_update=true writes one client's update; with defence=secagg the server holds an aggregate")
    if cfg.batch_size < 1:
        raise DeepleakError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.trials < 1:
        raise DeepleakError(f"trials must be >= 1, got {cfg.trials}")
    if cfg.first_trial < 0:
        raise DeepleakError(f"first_trial must be >= 0, got {cfg.first_trial}")
    if not 0 <= cfg.wrong_labels <= batch_size:
        raise DeepleakError(f"wrong_labels must be between 0 and batch_size ({batch_size}), got {cfg.wrong_labels}")
    # FedAvg: the top-level batch_size is the client's N, scenario.local_batch_size its mini-batch B.
    local = OmegaConf.select(cfg, "scenario.local_batch_size", default=None)
    if isinstance(local, int) and local > cfg.batch_size and not imported:
        raise DeepleakError(
            f"scenario.local_batch_size (the local mini-batch B = {local}) must be <= batch_size (the client's N = {cfg.batch_size})"
        )
    resolve_device(cfg.device)


def chosen(cfg: DictConfig, group: str) -> str | None:
    """The option chosen for a config group (``geng_plus`` for attack), None outside a Hydra run."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group)
    return OmegaConf.select(cfg, f"hydra.runtime.choices.{group}")


def requirements(cfg: DictConfig) -> dict[str, tuple[str, ...]]:
    """What the chosen label method and attack need beyond a gradient (their classes'
    ``requires``: "weights", "truth", "snapshots"), for an imported client to check."""
    from hydra._internal.utils import _locate  # noqa: PLC0415

    needs = {}
    for group in ("labels", "attack"):
        target = _locate(cfg[group]._target_)
        needs[f"{group}={chosen(cfg, group) or target.__name__}"] = tuple(
            getattr(target, "requires", ()))
    return needs


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate every configured object once (errors surface before any attack work)."""
    scenario = make(cfg.scenario)
    # An imported client brings its own data (or none): no data set or distribution is built.
    names = ("attack", "labels") if isinstance(scenario, ProvidesClient) else ("dataset", "distribution", "attack", "labels")
    objects = {"scenario": scenario, **{name: make(cfg[name]) for name in names}}
    objects["defence"] = make_defence(cfg)
    objects["wrong_labels"] = int(cfg.wrong_labels)
    if isinstance(objects["labels"], RevealsTruth):
        log.warning("labels=oracle: the attack is given the TRUE labels (an upper bound, not an attack)")
    return objects


def run_trial(cfg: DictConfig, objects: dict[str, Any], trial: int, device: torch.device,
              lpips_metric: metrics.LPIPSMetric | None, run_dir: Path) -> dict[str, Any]:
    dataset = objects.get("dataset")
    label_method, attack = objects["labels"], objects["attack"]
    seeds = trial_seeds(cfg.seed, trial)
    rng = np.random.default_rng(seeds["batch"])
    began = time.perf_counter()  # the trial's clock: timing's client, labels, attack and scoring

    # --- the client: private data and what it shares --------------------------------
    client: ImportedClient | None = objects.get("client")
    if client is not None:
        # An imported client (ProvidesClient): the update, the model and the truth (None:
        # unscored) come from its files; each trial attacks it with its own attack seed.
        observation, private = fresh(client).observation, client.truth
        indices, num_classes = None, client.num_classes
        if not isinstance(objects["defence"], NoDefence):  # the files' own defence, as the server knows it
            observation = dataclasses.replace(observation, defence=public_defence(objects["defence"]))
    else:
        num_classes = dataset.num_classes
        model = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), seeds["model"]).to(device)
        observation, private = simulate_clients(cfg, objects, model, rng, seeds, trial, device)
        indices = private.indices.tolist() if private.indices is not None else None
    if cfg.get("export_update"):  # the server's view in the import format, truth given explicitly (docs/import.md)
        from deepleak.scenarios.export import export_update  # noqa: PLC0415

        export_update(run_dir / "update" / f"trial_{trial:03d}", observation, cfg.model, truth=private)

    # --- the attacker: sees the observation only ------------------------------------
    if isinstance(label_method, RevealsTruth):
        label_method.reveal(private.labels)  # oracle only: stated in the log and metrics
    # The naive attacker takes a secure aggregate for one client's update (defence_view).
    view = attacker_view(observation, adaptive=attacks_adaptively(attack))
    started = time.perf_counter()
    client_seconds = started - began
    if isinstance(label_method, RoutesLabels):
        restored, label_route = label_method.restore_routed(view)
        route = {"label_route": label_route}  # which of its routes answered, in every record
    else:
        restored, route = label_method.restore(view), {}
    label_seconds = time.perf_counter() - started
    if objects["wrong_labels"]:
        restored = make_wrong(restored, objects["wrong_labels"], num_classes, rng)
    attack_began = time.perf_counter()
    reconstruction = attack.reconstruct(view, restored.to(device), seed=seeds["attack"])
    attack_wall = time.perf_counter() - attack_began

    # --- metrics: the only place the truth is used again -----------------------------
    if private is None:  # an imported update without truth: what was restored, unscored
        record = unscored_record(cfg, trial, seeds, restored, label_seconds, observation, reconstruction, run_dir)
        return {**record, **route, "threat_model": threat_model(observation, scored=False, defence=observation.defence),
                "privacy": privacy(objects["defence"], observation),
                "timing": trial_timing(client_seconds, label_seconds, attack_wall, reconstruction,
                                       time.perf_counter() - began)}
    true_labels = private.labels.cpu()
    restored_metrics = metrics.label_metrics(restored, true_labels, num_classes)
    record: dict[str, Any] = {
        "trial": trial,
        "seeds": seeds,
        "indices": indices,
        "scored": True,
        "true_labels": sorted(true_labels.tolist()),
        "restored_labels": restored.tolist(),
        "label_seconds": label_seconds,
        **route,
        "local_steps": observation.local_steps,
        **restored_metrics,
        "labels_source": "restored",
        "restored_label_accuracy": restored_metrics["label_accuracy"],
        # The label noise floor: a blind, flat guess of the counts scored the same way.
        "label_floor": metrics.label_floor(true_labels, num_classes),
        "threat_model": threat_model(observation, scored=True, defence=observation.defence),
        "privacy": privacy(objects["defence"], observation),
    }
    if reconstruction is not None and reconstruction.labels_from_attack:
        # The attack chose its own labels (DLG): the label metrics are those of the labels it
        # used; the restored labels' are kept under restored_label_*.
        record.update(
            labels_source="attack",
            attack_labels=reconstruction.labels.tolist(),
            restored_label_metrics=restored_metrics,
            **metrics.label_metrics(reconstruction.labels, true_labels, num_classes),
        )
        record["attack_label_accuracy"] = record["label_accuracy"]
    if reconstruction is not None and len(reconstruction.images) < len(private):
        # The naive attacker under secagg reconstructs K images of the n x K union: each is
        # scored against its own closest original (one-to-one), the rest of the union unseen.
        chosen_ones = metrics.closest_originals(reconstruction.images, private.images.cpu())
        private = PrivateBatch(private.images[chosen_ones], private.labels[chosen_ones])
        true_labels = private.labels.cpu()
        record["scored_against"] = {"originals": chosen_ones, "of": len(record["true_labels"])}
    if reconstruction is not None:
        scores = metrics.image_metrics(reconstruction.images, private.images.cpu(), reconstruction.labels,
                                       true_labels, lpips_metric)
        record.update(scores)
        record.update(reconstruction.record())
        # The recipe's own fields, and its own scores against the truth (the replay's epoch_psnr).
        record.update(reconstruction.extras)
        record.update(reconstruction.score(private.images.cpu(), scores["permutation"], metrics.psnr))
        record["noise_floor"] = metrics.noise_floor(private.images.cpu(), seeds["batch"], mean_image(objects))
        if cfg.save_images:
            paired = reconstruction.images[scores["permutation"]]
            record["images"] = [
                f"images/trial_{trial:03d}/{name}"
                for name in save_images(run_dir / "images" / f"trial_{trial:03d}", private.images.cpu(), paired)
            ]
        log.info(
            "trial %d: label accuracy %.3f, PSNR %.2f dB, SSIM %.3f, gradient distance %.3g (%.1f s)",
            trial, record["label_accuracy"], record["psnr_mean"] or float("nan"),
            record["ssim_mean"] or float("nan"), reconstruction.gradient_distance, reconstruction.seconds,
        )
    else:
        log.info("trial %d: label accuracy %.3f (labels only)", trial, record["label_accuracy"])
    record["timing"] = trial_timing(client_seconds, label_seconds, attack_wall, reconstruction,
                                    time.perf_counter() - began)
    return record


def trial_timing(client: float, labels: float, attack_wall: float, reconstruction: Any, total: float) -> dict[str, float]:
    """Where a trial's seconds went (metrics.json ``timing``): the client's update, the labels,
    the attack's set-up (everything of ``attack.reconstruct`` but its iterations: the attacker's
    model and target, priors, kernel choice, the image-gradient check, the pick of the best
    restart) and iterations, and the scoring (metrics, noise floor, images written). The attack
    clock ``attack_seconds`` (what ``attack.budget_s`` limits) is set-up after its start plus the
    iterations."""
    iterations = reconstruction.iteration_seconds if reconstruction is not None else 0.0
    return {
        "client_s": client,
        "labels_s": labels,
        "attack_setup_s": max(attack_wall - iterations, 0.0),
        "attack_iterations_s": iterations,
        "scoring_s": max(total - client - labels - attack_wall, 0.0),
        "trial_s": total,
    }


def simulate_clients(cfg: DictConfig, objects: dict[str, Any], model: torch.nn.Module, rng: np.random.Generator,
                     seeds: dict[str, int], trial: int, device: torch.device) -> tuple[Observation, PrivateBatch]:
    """The simulated client(s) of one trial: (what the server receives, the private data it
    is scored against). One client plays the scenario with the configured defence; under
    ``defence=secagg`` n clients draw their own batches of ``batch_size`` (the first is the
    batch a single client would have) and the server receives their weighted mean
    (:mod:`deepleak.scenarios.secure_aggregation`), scored against the union."""
    dataset, distribution, scenario, defence = (objects[k] for k in ("dataset", "distribution", "scenario", "defence"))
    clients = defence.clients if isinstance(defence, SecAgg) else 1
    batches, observations = [], []
    for _ in range(clients):
        indices = distribution.sample(dataset.targets, dataset.num_classes, cfg.batch_size, rng)
        images, labels = dataset.batch(indices)
        batch = PrivateBatch(images.to(device), labels.to(device), torch.as_tensor(indices))
        client_defence = None if clients > 1 else defence
        observations.append(scenario.observe(model, batch, dataset.num_classes, trial=trial,
                                             defence=client_defence, defence_seed=seeds["defence"]))
        batches.append(batch)
    if clients == 1:
        return observations[0], batches[0]
    return aggregate(observations, public_defence(defence)), union(batches)


def attacks_adaptively(attack: Any) -> bool:
    """Whether the attack takes the defence into account (``attack.adaptive``, default true)."""
    return attack.adaptive if isinstance(attack, DefenceAware) else True


def privacy(defence: Any, observation: Observation) -> dict[str, Any] | None:
    """The defence's privacy accounting for one client's update (dp_sgd: epsilon at its delta
    from Opacus's accountant, over the client's T steps at sampling rate B / N); None without."""
    recipe = observation.recipe
    return defence.epsilon(steps=observation.local_steps, sample_rate=recipe.batch_size / recipe.num_samples)


def mean_image(objects: dict[str, Any]) -> metrics.MeanImage | None:
    """The data set's mean image for the noise floor, computed on first use and kept in
    ``objects``; None for an imported update (no data set)."""
    if "mean_image" not in objects:
        dataset = objects.get("dataset")
        objects["mean_image"] = metrics.dataset_mean_image(dataset) if dataset is not None else None
    return objects["mean_image"]


def unscored_record(cfg: DictConfig, trial: int, seeds: dict[str, int], restored: torch.Tensor, label_seconds: float,
                    observation: Any, reconstruction: Any, run_dir: Path) -> dict[str, Any]:
    """One trial on an imported update without truth: the restored labels, the
    reconstructions (PNGs of them alone, with their labels) and the final gradient or weight
    distance; ``"scored": false`` and no PSNR or other score against a truth."""
    record: dict[str, Any] = {
        "trial": trial,
        "seeds": seeds,
        "indices": None,
        "scored": False,
        "restored_labels": restored.tolist(),
        "label_seconds": label_seconds,
        "local_steps": observation.local_steps,
        "labels_source": "restored",
    }
    if reconstruction is None:
        log.info("trial %d: restored labels %s (labels only; unscored: no truth)", trial, restored.tolist())
        return record
    if reconstruction.labels_from_attack:
        record.update(labels_source="attack", attack_labels=reconstruction.labels.tolist())
    record["image_labels"] = reconstruction.labels.tolist()  # the label of each reconstruction, in PNG order
    record.update(reconstruction.record())
    record.update(reconstruction.extras)
    if cfg.save_images:
        folder = run_dir / "images" / f"trial_{trial:03d}"
        record["images"] = [f"images/trial_{trial:03d}/{name}" for name in save_images(folder, None, reconstruction.images)]
    log.info("trial %d: restored labels %s, gradient distance %.3g (%.1f s; unscored: no truth)",
             trial, restored.tolist(), reconstruction.gradient_distance, reconstruction.seconds)
    return record


def make_wrong(labels: torch.Tensor, count: int, num_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """Replace ``count`` of the restored labels by other classes (``wrong_labels``): the
    paper's claim that one wrong label breaks image restoration, made measurable."""
    if not 0 <= count <= len(labels):
        raise DeepleakError(f"wrong_labels must be between 0 and batch_size ({len(labels)}), got {count}")
    if num_classes < 2:
        raise DeepleakError("wrong_labels needs at least two classes")
    labels = labels.clone()
    for position in rng.choice(len(labels), size=count, replace=False):
        others = [c for c in range(num_classes) if c != int(labels[position])]
        labels[position] = int(rng.choice(others))
    return labels


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over trials of every scalar metric that is present."""
    summary: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and r.get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    summary.update(metrics.noise_floor_summary(records))
    return summary


def check_defence(cfg: DictConfig, objects: dict[str, Any], client: ImportedClient | None) -> None:
    """Refuse, before any work, a defence the victim or the attack cannot take: the defence
    checks the model (soteria: a final Linear; dp_sgd: no train-mode batch norm), the attack
    its own route (:class:`DefenceAware`)."""
    defence = objects["defence"]
    if isinstance(defence, NoDefence):
        return
    if client is not None:
        model, bn_mode = client.observation.model, client.observation.recipe.bn_mode
    else:
        dataset = objects["dataset"]
        model = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), 0)
        bn_mode = OmegaConf.select(cfg, "scenario.bn_mode", default="train")
    defence.check_model(model, bn_mode)
    if isinstance(objects["attack"], DefenceAware):
        objects["attack"].check_defence(public_defence(defence))


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the attack task into ``run_dir``; returns the metrics written to metrics.json."""
    started = time.perf_counter()
    validate(cfg)
    device = resolve_device(cfg.device)
    objects = build(cfg)
    client = objects["client"] = objects["scenario"].load(device) if isinstance(objects["scenario"], ProvidesClient) else None
    check_defence(cfg, objects, client)
    attacking = not isinstance(objects["attack"], NoAttack)
    lpips_metric = metrics.load_lpips(device) if attacking else None
    preload_seconds = preload_optimizers() if attacking else 0.0  # outside every attack's clock and budget

    result: dict[str, Any] = {
        "scenario": objects["scenario"].name,
        "labels": objects["labels"].name,
        "oracle_labels": isinstance(objects["labels"], RevealsTruth),
        "wrong_labels": objects["wrong_labels"],
        "attack": OmegaConf.select(cfg, "attack._target_"),
        "recipe": chosen(cfg, "attack"),  # the attack option that ran (geng, geng_plus, ...)
        "dataset": client.source if client else type(objects["dataset"]).__name__,
        "num_classes": client.num_classes if client else objects["dataset"].num_classes,
        "image_shape": list(client.image_shape if client else objects["dataset"].image_shape),
        "batch_size": client.observation.recipe.num_samples if client else cfg.batch_size,
        "scored": client.truth is not None if client else True,
        "trials": cfg.trials,
        "first_trial": cfg.first_trial,
        "seed": cfg.seed,
        "device": str(device),
        "torch": torch.__version__,
        "preload_seconds": preload_seconds,  # torch._dynamo imported before the attack clock (runtime.preload_optimizers)
        "victim": None if client else victim_stage(OmegaConf.select(cfg, "model.checkpoint")),  # report metadata only
        "lpips_absent_reason": lpips_metric.absent_reason if lpips_metric else "no image reconstruction",
        "metadata_leaked": dict(objects["scenario"].metadata_leaked),
        "defence": public_defence(objects["defence"]),
        "adaptive": attacks_adaptively(objects["attack"]),  # the attacker knows the defence (attack.adaptive)
    }
    if client is not None and client.regeneration is not None:
        result["update_regeneration"] = client.regeneration
    records = []
    for trial in range(cfg.first_trial, cfg.first_trial + cfg.trials):
        records.append(run_trial(cfg, objects, trial, device, lpips_metric, run_dir))
        result["threat_model"] = records[-1].pop("threat_model")  # the same for every trial
        result["privacy"] = records[-1].pop("privacy", None)
        result.update(summary=summarise(records), per_trial=records, trials_done=len(records),
                      wall_seconds=time.perf_counter() - started)
        write_metrics(run_dir, result)  # after every trial, so an interrupted run keeps its trials
        if records[-1].get("interrupted"):
            raise KeyboardInterrupt
    summary = result["summary"]
    line = ", ".join(f"{k} {v['mean']:.4g}" for k, v in summary.items() if k in ("label_accuracy", "psnr_mean", "ssim_mean", "lpips_mean"))
    log.info("done in %.1f s: %s; results in %s", result["wall_seconds"], line, run_dir)
    return result
