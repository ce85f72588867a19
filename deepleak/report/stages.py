"""The report's ``## Training stages`` section: leakage against the victim's training stage.

Each attack job records its victim (metrics.json's ``victim``, :mod:`deepleak.models.checkpoints`):
the epoch of the checkpoint it attacked (0 for an untrained victim), and that checkpoint's
train and test accuracy as ``deepleak train checkpoint_epochs=[...]`` measured them. This
section groups the jobs by *route* (scenario, label method, attack recipe, batch size and any other
swept key but the checkpoint) and, within a route, by stage, so that one table per route reads
down the training run: epoch, the victim's test accuracy, n, label accuracy, PSNR, SSIM (cells
as in the main table: mean ± std [95% CI] over the pooled trials).

Stages: a checkpoint with a stage file gives its epoch; ``model.checkpoint=null`` is the
untrained victim drawn afresh per trial (``0 (fresh init)``, a row of its own before the
checkpointed epoch 0, no accuracy); a checkpoint without a stage file has no known stage and is
left out (the section says how many). Jobs of several training runs at the same epoch pool, and
the test accuracy cell is then over the distinct victims.

The section appears only when some job attacked a checkpoint of known stage. It writes
``stages.csv`` and two figures, ``fig_stage_label_accuracy.png`` and ``fig_stage_psnr.png``:
the metric against epoch (left) and against the victim's test accuracy (right), one line per
route, bars = 95 % intervals.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepleak.report.constants import IGNORED_KEYS, MARKERS, METRICS, NOT_APPLICABLE
from deepleak.report.figures import _error, _save
from deepleak.report.groups import Group, _sort_key
from deepleak.report.jobs import Job
from deepleak.report.noise_floor import noise_floor_rows
from deepleak.report.stats import Stat, describe, finite_numbers
from deepleak.report.tables import CSV_STATS, _cell, _csv_cells, _status_text

log = logging.getLogger(__name__)

CSV_NAME = "stages.csv"
TABLE_METRICS = ("label_accuracy", "label_floor", "psnr_mean", "ssim_mean")
FIGURES = {"label_accuracy": "fig_stage_label_accuracy.png", "psnr_mean": "fig_stage_psnr.png"}
#: Swept keys that are not part of a route: the stage itself, and keys that change no result
#: of a trial (trials: how many; save_images, device ...).
NOT_ROUTE_KEYS = frozenset({"model.checkpoint", "trials", "save_images", "device", "export_update", *IGNORED_KEYS})
#: Route order in the section: the label methods as the presets list them.
LABEL_ORDER = ("zeroshot", "zeroshot_plus", "gradinversion", "llg", "ilrg", "feature_fit", "feature_fit_search", "adaptive",
               "idlg", "interpolated", "fitted", "fitted_search", "oracle")
FEDSGD = "fedsgd"  # the scenario a route needs no mark for
FRESH = "0 (fresh init)"  # the epoch cell of an untrained victim drawn per trial (model.checkpoint=null)
ACCURACY_DECIMALS = 3


# --------------------------------------------------------------------------- a job's stage

def job_victim(job: Job) -> dict[str, Any] | None:
    """metrics.json's ``victim`` block; None for a job without one (made before it existed,
    an imported update, no metrics)."""
    victim = (job.metrics or {}).get("victim")
    return victim if isinstance(victim, dict) else None


def _epoch(victim: dict[str, Any]) -> int | None:
    epoch = victim.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else None


def known_stage(victim: dict[str, Any] | None) -> bool:
    """A checkpoint whose stage file gave its epoch."""
    return victim is not None and bool(victim.get("checkpoint")) and _epoch(victim) is not None


def _fresh(victim: dict[str, Any] | None) -> bool:
    """The untrained victim drawn afresh per trial (model.checkpoint=null)."""
    return victim is not None and not victim.get("checkpoint") and _epoch(victim) == 0


# --------------------------------------------------------------------------- rows and routes

@dataclass
class StageRow:
    """One stage of one route: its jobs (trials pooled) and the victims they attacked."""

    epoch: int
    fresh: bool
    group: Group

    @property
    def epoch_text(self) -> str:
        return FRESH if self.fresh else str(self.epoch)

    def victims(self) -> list[dict[str, Any]]:
        """The distinct victims of the row's jobs: one per training run (the stage file's
        absolute ``train_run``, so two spellings of one checkpoint path are one victim), else
        per checkpoint path."""
        seen: dict[str, dict[str, Any]] = {}
        for job in self.group.jobs:
            victim = job_victim(job) or {}
            seen.setdefault(str(victim.get("train_run") or victim.get("checkpoint")), victim)
        return list(seen.values())

    def accuracy(self, key: str) -> Stat | str:
        """The victims' ``test_accuracy`` or ``train_accuracy`` over the distinct victims;
        ``-`` for none (the fresh init)."""
        values = finite_numbers([v.get(key) for v in self.victims()])
        return describe(values) if values else NOT_APPLICABLE

    def accuracy_text(self, key: str) -> str:
        """One victim: its accuracy alone (``0.985``); several: the cell of their statistics."""
        stat = self.accuracy(key)
        if isinstance(stat, Stat) and stat.n == 1:
            return f"{stat.mean:.{ACCURACY_DECIMALS}f}"
        return _cell(stat, ACCURACY_DECIMALS)


@dataclass
class Route:
    """A scenario, label method, attack recipe, batch size and the values of the other swept keys."""

    labels: str
    attack: str
    batch_size: str
    others: tuple[str | None, ...]
    rows: list[StageRow]
    scenario: str = FEDSGD

    def _scenario_text(self) -> str:
        """``scenario=fedavg, `` for any scenario but FedSGD (the plain route needs no mark)."""
        return "" if self.scenario in (FEDSGD, NOT_APPLICABLE) else f"scenario={self.scenario}, "

    def title(self, other_keys: list[str]) -> str:
        extra = "".join(f", {k}={NOT_APPLICABLE if v is None else v}" for k, v in zip(other_keys, self.others))
        attack = "labels only (attack=none)" if self.attack == "none" else f"attack={self.attack}"
        return f"{self._scenario_text()}labels={self.labels}, {attack}, batch_size={self.batch_size}{extra}"

    def legend(self, other_keys: list[str]) -> str:
        """The short name in a figure: ``llg, K=8`` (labels only), ``geng_plus + oracle, K=4``,
        ``fedavg: zeroshot, K=8``."""
        extra = "".join(f", {k}={NOT_APPLICABLE if v is None else v}" for k, v in zip(other_keys, self.others))
        head = self.labels if self.attack == "none" else f"{self.attack} + {self.labels}"
        scenario = "" if not self._scenario_text() else f"{self.scenario}: "
        return f"{scenario}{head}, K={self.batch_size}{extra}"

    def metrics(self) -> list[str]:
        """The metrics some row of the route has."""
        return [m for m in TABLE_METRICS if any(isinstance(r.group.stat(m), Stat) for r in self.rows)]


def _route_of(job: Job) -> tuple[str, str, str, str]:
    """``(scenario, labels, attack, batch size)`` of a job."""
    metrics = job.metrics or {}
    scenario = metrics.get("scenario") or job.value("scenario") or FEDSGD
    labels = metrics.get("labels") or job.value("labels") or NOT_APPLICABLE
    attack = metrics.get("recipe") or job.value("attack") or NOT_APPLICABLE
    batch = metrics.get("batch_size", job.value("batch_size"))
    return str(scenario), str(labels), str(attack), NOT_APPLICABLE if batch is None else str(batch)


def _route_order(route: Route) -> tuple:
    labels = LABEL_ORDER.index(route.labels) if route.labels in LABEL_ORDER else len(LABEL_ORDER)
    return (route.scenario != FEDSGD, route.scenario, route.attack != "none", route.attack, labels, route.labels,
            _sort_key(route.batch_size), tuple(_sort_key(v) for v in route.others))


def other_keys(jobs: list[Job], swept: list[str]) -> list[str]:
    """The swept keys that split routes beyond label method, attack and batch size: those whose
    value differs between jobs of the same label method, attack and batch size (a key that
    only goes with the route, as the distribution or an attack's budget, splits nothing)."""
    candidates = [k for k in swept if k not in NOT_ROUTE_KEYS and k not in ("labels", "attack", "batch_size")
                  and not k.startswith("hydra")]
    values: dict[tuple[str, tuple], set] = {}
    for job in jobs:
        for key in candidates:
            values.setdefault((key, _route_of(job)), set()).add(job.value(key))
    return [k for k in candidates if any(len(v) > 1 for (key, _), v in values.items() if key == k)]


def stage_routes(jobs: list[Job], swept: list[str]) -> tuple[list[Route], list[str], list[Job]]:
    """``(routes, other keys, left out)``: the routes with their stage rows (epoch order, the
    fresh init before the checkpointed epoch 0), the swept keys that split routes
    (:func:`other_keys`), and the jobs on a checkpoint of unknown stage. No routes when no job
    attacked a checkpoint of known stage."""
    if not any(known_stage(job_victim(j)) for j in jobs):
        return [], [], []
    keys = other_keys([j for j in jobs if job_victim(j) is not None], swept)
    entries: dict[tuple, dict[tuple, list[Job]]] = {}
    unknown = []
    for job in jobs:
        victim = job_victim(job)
        if not (known_stage(victim) or _fresh(victim)):
            if victim is not None:
                unknown.append(job)
            continue
        route = (*_route_of(job), tuple(job.value(k) for k in keys))
        stage = (_epoch(victim), not _fresh(victim))  # the fresh init sorts before the checkpointed 0
        entries.setdefault(route, {}).setdefault(stage, []).append(job)
    routes = []
    for (scenario, labels, attack, batch, others), stages in entries.items():
        rows = [StageRow(epoch, not checkpointed, Group((str(epoch),), jobs_))
                for (epoch, checkpointed), jobs_ in sorted(stages.items())]
        routes.append(Route(labels, attack, batch, others, rows, scenario))
    return sorted(routes, key=_route_order), keys, unknown


# --------------------------------------------------------------------------- md and csv

def markdown_route(route: Route, keys: list[str]) -> str:
    """``### <route>`` and its table: epoch, test acc., n, then the route's metrics."""
    metrics = route.metrics()
    header = ["epoch", "test acc.", "n", *(METRICS[m][0] for m in metrics)]
    lines = [f"### {route.title(keys)}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["--:"] * len(header)) + "|"]
    for r in route.rows:
        n = len(r.group.records)
        cells = [r.epoch_text, r.accuracy_text("test_accuracy"), str(n),
                 *(_cell(r.group.stat(m), METRICS[m][1], n) for m in metrics)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(routes: list[Route], keys: list[str]) -> str:
    """stages.csv, one row per route and stage: ``scenario``, ``labels``, ``attack``,
    ``batch_size``, the other swept keys, ``epoch``, ``fresh_init`` (true: model.checkpoint=null), ``victims``,
    ``test_accuracy_*`` and ``train_accuracy_*`` (over the distinct victims), ``n``, ``jobs``,
    per metric ``_mean``, ``_std``, ``_ci_low``, ``_ci_high``, ``_n`` (as report.csv)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    accuracy = [f"{key}_{s}" for key in ("test_accuracy", "train_accuracy") for s in CSV_STATS]
    writer.writerow(["scenario", "labels", "attack", "batch_size", *keys, "epoch", "fresh_init", "victims", *accuracy,
                     "n", "jobs", *(f"{m}_{s}" for m in TABLE_METRICS for s in CSV_STATS)])
    for route in routes:
        for r in route.rows:
            row: list[Any] = [route.scenario, route.labels, route.attack, route.batch_size,
                              *("" if v is None else v for v in route.others),
                              r.epoch, "true" if r.fresh else "false", len(r.victims())]
            row += _csv_cells(r.accuracy("test_accuracy")) + _csv_cells(r.accuracy("train_accuracy"))
            row += [len(r.group.records), len(r.group.jobs)]
            for m in TABLE_METRICS:
                row += _csv_cells(r.group.stat(m))
            writer.writerow(row)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the section

@dataclass
class StageReport:
    """What :func:`stage_report` made: the markdown section, stages.csv's text and the figures."""

    markdown: str
    csv: str
    figures: list[Path]


def stage_report(attack_jobs: list[Job], swept: list[str], folder: Path, plots: bool = True) -> StageReport | None:
    """The ``## Training stages`` section, its CSV and (with ``plots``) its figures, saved into
    ``folder``; None when no job attacked a checkpoint of known stage."""
    routes, keys, unknown = stage_routes(attack_jobs, swept)
    if not routes:
        return None
    log.info("training stages: %d routes, %d stages", len(routes), len({r.epoch_text for x in routes for r in x.rows}))
    figures = []
    if plots:
        for metric, name in FIGURES.items():
            if stage_figure(metric, routes, keys, folder / name):
                figures.append(folder / name)
    statuses = _status_text(Counter(j.status for x in routes for r in x.rows for j in r.group.jobs))
    intro = ("Leakage against the victim's training stage: each attack records the checkpoint it attacked "
             "(metrics.json's `victim`: `deepleak train checkpoint_epochs=[...]` wrote its epoch and accuracies "
             "beside it). One table per route (label method, attack, batch size); rows in training order. "
             f"`{FRESH}`: the untrained victim drawn afresh per trial (`model.checkpoint=null`). test acc.: the "
             "victim's accuracy on its training run's held-out split. Other cells as in the table above "
             f"({statuses}).")
    md = ["## Training stages", "", intro, ""]
    if unknown:
        md += [(f"Not in this section: {len(unknown)} job{'s' if len(unknown) > 1 else ''} on a checkpoint without "
                "a stage file (unknown epoch)."), ""]
    md += [markdown_route(route, keys) for route in routes]
    floor = _mean_image_floor(routes)
    if floor is not None:
        md += [f"Noise floor (mean image, over the image routes' trials): PSNR {_cell(floor, METRICS['psnr_mean'][1])} dB.",
               ""]
    md += [f"![{p.stem}]({p.name})\n" for p in figures]
    return StageReport("\n".join(md), csv_rows(routes, keys), figures)


def _mean_image_floor(routes: list[Route]) -> Stat | None:
    groups = [r.group for x in routes for r in x.rows if isinstance(r.group.stat("psnr_mean"), Stat)]
    for reference, _, cells in noise_floor_rows(groups) if groups else []:
        if reference == "mean_image" and isinstance(cells.get("psnr_mean"), Stat):
            return cells["psnr_mean"]
    return None


def _label_floors(routes: list[Route]) -> dict[str, Stat]:
    """The label noise floor (a flat guess's label accuracy) per batch size (it depends on it),
    pooled over the routes' trials of that batch size."""
    values: dict[str, list[Any]] = {}
    for route in routes:
        values.setdefault(route.batch_size, []).extend(
            record.get("label_floor") for r in route.rows for record in r.group.records)
    floors = {k: finite_numbers(v) for k, v in values.items()}
    return {k: describe(v) for k, v in sorted(floors.items(), key=lambda item: _sort_key(item[0])) if v}


# --------------------------------------------------------------------------- figures

def stage_figure(metric: str, routes: list[Route], keys: list[str], path: Path) -> bool:
    """``metric`` against epoch (left; symmetric log axis past 8 epochs, the fresh init an open
    marker at 0) and against the victim's mean test accuracy (right; points joined in training
    order, each distinct accuracy labelled with its epochs), one colour and marker per route,
    bars = 95 % intervals; for PSNR the mean image's noise floor dashed, for label accuracy the
    flat guess's, one line per batch size. False (nothing
    written) when no route has the metric."""
    from matplotlib.figure import Figure  # only the report needs matplotlib
    from matplotlib.transforms import blended_transform_factory

    drawn = [x for x in routes if any(isinstance(r.group.stat(metric), Stat) for r in x.rows)]
    if not drawn:
        return False
    title = METRICS[metric][0]
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    by_epoch, by_accuracy = fig.subplots(1, 2, sharey=True)
    epochs: set[int] = set()
    accuracies: dict[float, set[int]] = {}
    for n, route in enumerate(drawn):
        # Past ten routes the colours repeat: a new line style keeps them apart.
        colour, marker, style = f"C{n % 10}", MARKERS[n % len(MARKERS)], ("-", "--", ":")[(n // 10) % 3]
        label = route.legend(keys)
        points = [(r, r.group.stat(metric)) for r in route.rows if isinstance(r.group.stat(metric), Stat)]
        trained = [(r, s) for r, s in points if not r.fresh]
        fresh = [(r, s) for r, s in points if r.fresh]
        if trained:
            by_epoch.errorbar([r.epoch for r, _ in trained], [s.mean for _, s in trained],
                              yerr=[_error(s) for _, s in trained], color=colour, marker=marker, capsize=3,
                              alpha=0.85, linestyle=style, label=label)
            epochs.update(r.epoch for r, _ in trained)
        for _, s in fresh:
            by_epoch.errorbar([0], [s.mean], yerr=[_error(s)], color=colour, marker=marker, markerfacecolor="none",
                              capsize=3, alpha=0.85, linestyle="none",
                              label=None if trained else f"{label} ({FRESH})")
        measured = [(r.accuracy("test_accuracy"), r, s) for r, s in trained]
        measured = [(a, r, s) for a, r, s in measured if isinstance(a, Stat)]
        if measured:
            by_accuracy.errorbar([a.mean for a, _, _ in measured], [s.mean for _, _, s in measured],
                                 xerr=[_error(a) for a, _, _ in measured], yerr=[_error(s) for _, _, s in measured],
                                 color=colour, marker=marker, capsize=3, alpha=0.85, linewidth=0.9, linestyle=style)
            for a, r, _ in measured:
                accuracies.setdefault(round(a.mean, ACCURACY_DECIMALS), set()).add(r.epoch)
    if any(r.fresh for x in drawn for r in x.rows):
        epochs.add(0)
    ordered = sorted(epochs)
    if ordered and ordered[-1] >= 8:
        by_epoch.set_xscale("symlog", linthresh=1)
    if ordered and len(ordered) <= 12:
        by_epoch.set_xticks(ordered, [str(e) for e in ordered])
        by_epoch.minorticks_off()
    by_epoch.set_xlabel("epoch of the victim's training (0: initial model)")
    by_epoch.set_ylabel(title)
    by_accuracy.set_xlabel("victim's test accuracy (labels: epochs)")
    by_accuracy.set_xlim(-0.03, 1.03)
    below = blended_transform_factory(by_accuracy.transData, by_accuracy.transAxes)
    for accuracy, at in sorted(accuracies.items()):
        by_accuracy.text(accuracy, 0.02, ",".join(str(e) for e in sorted(at)), transform=below, fontsize="x-small",
                         ha="center", color="dimgrey")
    if metric == "psnr_mean":
        image_floor = _mean_image_floor(drawn)
        floors = {"noise floor: mean image": image_floor} if image_floor is not None else {}
    else:
        floors = {f"label floor (flat guess), K={k}": f for k, f in _label_floors(drawn).items()}
    for ax in (by_epoch, by_accuracy):
        for n, (floor_label, floor) in enumerate(floors.items()):
            ax.axhline(floor.mean, linestyle=("--", ":", "-.")[n % 3], linewidth=1, color="grey",
                       label=floor_label if ax is by_epoch else None)
        if metric.endswith("accuracy"):
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    # The legend beside the panels, never over the points: a column per 20 entries.
    handles, labels = by_epoch.get_legend_handles_labels()
    columns = max(1, -(-len(labels) // 20))
    fig.set_size_inches(11.5 + 3.4 * columns, max(4.4, 0.16 * -(-len(labels) // columns) + 1.0))
    fig.legend(handles, labels, loc="outside right upper", ncols=columns, fontsize="x-small",
               title="route (K: batch size)", title_fontsize="x-small")
    fig.suptitle(f"{title} against the victim's training stage: mean over trials, bars = 95% CI")
    _save(fig, path)
    return True
