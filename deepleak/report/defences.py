"""The report's ``## Defences`` section: leakage under each client-side defence against its
strength, the adaptive attacker (who knows the defence's public parameters) beside the naive
one, joined with the utility that ``deepleak train`` measured under the same defence.

Why here and not in the main table: the main table has one column per swept key (``defence``,
``defence.std``, ``defence.bits``, ...), most of them ``-`` for most rows; a defence sweep
reads as one ladder per defence, and the price of a defence (its utility) lives in other jobs.

Jobs come in two kinds. *Attack jobs* (``deepleak attack``) have per-trial records and, in
their ``metrics.json``, ``"defence"`` (the defence's name and public parameters), ``"adaptive"``
and ``"privacy"`` (dp_sgd's epsilon for one shared update). *Training jobs* (``deepleak train``)
are the utility measurements: the victim trained with the same defence on every step; they are
recognised by :func:`is_train_job` and kept out of the attack table (:func:`split_jobs`), and
their final ``test_accuracy`` is pooled over the jobs (seeds) with the same defence (keyed by
:func:`defence_key`) into the ``utility`` cell.

Rows (:class:`DefenceRow`): one per defence (its full public parameters), attacker and value of
any other swept key; the defence ``none`` once, as the reference (without a defence the two
attackers are the same: the adaptive attacker's jobs are shown, the naive one's only when there
are no others). The section appears only when some attack job has a defence other than none
or a naive attacker (:func:`defence_report`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepleak.report.constants import MARKERS, METRICS, NOT_APPLICABLE
from deepleak.report.figures import _error, _save
from deepleak.report.groups import Group, _sort_key
from deepleak.report.jobs import Job
from deepleak.report.noise_floor import noise_floor_rows
from deepleak.report.stats import Stat, describe, finite_numbers
from deepleak.report.tables import CSV_STATS, _cell, _csv_cells, _label, _status_text

log = logging.getLogger(__name__)

#: Each defence's strength parameter (the value its ladder sweeps).
STRENGTH: dict[str, str] = {"noise": "std", "clip": "max_norm", "prune": "ratio", "quantize": "bits",
                            "soteria": "ratio", "dp_sgd": "noise_multiplier", "secagg": "clients"}
ORDER = ("none", "noise", "clip", "prune", "quantize", "soteria", "dp_sgd", "secagg")  # rows and panels
STRONGER_WHEN_SMALLER = frozenset({"clip", "quantize"})  # fewer bits, a smaller norm: sorted and drawn reversed
LOG_STRENGTH = frozenset({"noise", "dp_sgd"})  # drawn on a log axis whenever all values are > 0
TABLE_METRICS = ("label_accuracy", "psnr_mean", "ssim_mean", "lpips_mean")
FIGURE_METRICS = ("psnr_mean", "label_accuracy")
NOT_MEASURED = "not measured"  # no training job with this defence gave a test accuracy
UTILITY_DECIMALS = 3
CSV_NAME = "defences.csv"


# --------------------------------------------------------------------------- the two kinds of job

def is_train_job(job: Job) -> bool:
    """A ``deepleak train`` run: its metrics.json has ``checkpoint`` and ``history`` and no
    ``per_trial``; without a usable metrics.json (failed before its first epoch, corrupt), its
    composed config has ``epochs`` and no ``trials`` (conf/train.yaml against conf/config.yaml)."""
    if isinstance(job.metrics, dict):
        return "per_trial" not in job.metrics and "checkpoint" in job.metrics and "history" in job.metrics
    return "epochs" in job.config and "trials" not in job.config


def split_jobs(jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """``(attack jobs, training jobs)``, each in the order found."""
    train = [j for j in jobs if is_train_job(j)]
    return [j for j in jobs if not is_train_job(j)], train


# --------------------------------------------------------------------------- a job's defence

def defence_key(defence: dict[str, Any]) -> str:
    """The defence as canonical JSON (sorted keys, every number a float, so ``max_norm=1`` in one
    sweep and ``1.0`` in another are the same defence): the join of attack and training jobs."""
    def plain(value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return json.dumps({k: plain(v) for k, v in defence.items()}, sort_keys=True)


def job_defence(job: Job) -> dict[str, Any] | None:
    """metrics.json's ``defence``; for a job without it, the composed config's defence (the group
    choice and its parameters); ``none`` for a run made before defences; None when unknown (no
    metrics and no defence in the config)."""
    metrics = job.metrics or {}
    if isinstance(metrics.get("defence"), dict) and metrics["defence"].get("name"):
        return dict(metrics["defence"])
    node = job.config.get("defence")
    name = job.choices.get("defence") or job.overrides.get("defence")
    if isinstance(node, dict) and name:
        return {"name": str(name), **{k: v for k, v in node.items() if k != "_target_"}}
    return {"name": "none"} if job.metrics else None


def job_adaptive(job: Job) -> bool:
    """Whether the attacker knew the defence: metrics.json's ``adaptive``, else the config's
    ``attack.adaptive``, else true (the default, and every run made before the flag)."""
    metrics = job.metrics or {}
    if isinstance(metrics.get("adaptive"), bool):
        return metrics["adaptive"]
    attack = job.config.get("attack")
    flag = attack.get("adaptive") if isinstance(attack, dict) else None
    return flag if isinstance(flag, bool) else True


def _privacy(job: Job) -> dict[str, Any] | None:
    """The job's top-level ``privacy`` (dp_sgd), else the first trial record's."""
    metrics = job.metrics or {}
    if isinstance(metrics.get("privacy"), dict):
        return metrics["privacy"]
    return next((r["privacy"] for r in job.records if isinstance(r.get("privacy"), dict)), None)


def _epsilon(privacy: dict[str, Any]) -> float | None:
    value = privacy.get("epsilon")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def utility_stats(train_jobs: list[Job]) -> dict[str, Stat]:
    """Final test accuracy per defence (:func:`defence_key`), pooled over its training jobs
    (seeds) with :func:`describe`; jobs without one (not finished, no held-out split) add nothing."""
    values: dict[str, list[Any]] = {}
    for job in train_jobs:
        defence = job_defence(job)
        if defence is not None and job.metrics:
            values.setdefault(defence_key(defence), []).append(job.metrics.get("test_accuracy"))
    return {key: describe(numbers) for key, raw in values.items() if (numbers := finite_numbers(raw))}


# --------------------------------------------------------------------------- rows

@dataclass
class DefenceRow:
    """The jobs of one defence (full public parameters), attacker and value of the other swept keys."""

    defence: dict[str, Any]
    label: str  # the name, with the parameters that tell its variants apart: ``noise (distribution=laplace)``
    adaptive: bool
    others: tuple[str | None, ...]
    setting: str  # the other swept keys' values, ``key=value, ...`` ("" when there are none)
    group: Group
    utility: Stat | str

    @property
    def name(self) -> str:
        return str(self.defence["name"])

    @property
    def strength(self) -> float | None:
        """The value of the defence's strength parameter (:data:`STRENGTH`); None for none."""
        value = self.defence.get(STRENGTH.get(self.name, ""))
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def strength_text(self) -> str:
        value = self.defence.get(STRENGTH.get(self.name, ""))
        return NOT_APPLICABLE if self.strength is None else f"{value:g}" if isinstance(value, float) else str(value)

    @property
    def attacker(self) -> str:
        return NOT_APPLICABLE if self.name == "none" else "adaptive" if self.adaptive else "naive"

    def epsilons(self) -> list[float]:
        """The distinct epsilons its jobs report (dp_sgd), sorted."""
        return sorted({e for j in self.group.jobs if (p := _privacy(j)) and (e := _epsilon(p)) is not None})


def is_other_key(key: str) -> bool:
    """A swept key that is not the defence or the attacker's knowledge of it."""
    return not (key == "defence" or key.startswith("defence.") or key == "attack.adaptive")


def defence_rows(attack_jobs: list[Job], train_jobs: list[Job], swept: list[str]) -> list[DefenceRow]:
    """The section's rows, sorted (:data:`ORDER`, weak to strong, adaptive first); empty when no
    attack job has a defence other than none or a naive attacker."""
    others = [k for k in swept if is_other_key(k)]
    entries: dict[tuple, tuple[dict[str, Any], list[Job]]] = {}
    for job in attack_jobs:
        defence = job_defence(job)
        if defence is None:
            continue
        key = (defence_key(defence), job_adaptive(job), tuple(job.value(k) for k in others))
        entries.setdefault(key, (defence, []))[1].append(job)
    if not any(d["name"] != "none" or not adaptive for (_, adaptive, _), (d, _) in entries.items()):
        return []
    for key, adaptive, rest in list(entries):  # none once: the adaptive attacker's jobs
        if key == defence_key({"name": "none"}) and not adaptive and (key, True, rest) in entries:
            del entries[(key, adaptive, rest)]
    utilities = utility_stats(train_jobs)
    labels = _labels([d for d, _ in entries.values()])
    rows = [DefenceRow(d, labels[defence_key(d)], adaptive, rest, _label(others, rest) if others else "",
                       Group(rest, jobs), utilities.get(key, NOT_MEASURED))
            for (key, adaptive, rest), (d, jobs) in entries.items()]
    return sorted(rows, key=_row_order)


def _labels(defences: list[dict[str, Any]]) -> dict[str, str]:
    """Each defence's label: its name, plus the non-strength parameters whose value differs
    between the defences of that name (else two variants would share a row label)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for d in defences:
        by_name.setdefault(str(d["name"]), []).append(d)
    labels = {}
    for name, items in by_name.items():
        keys = sorted({k for d in items for k in d} - {"name", STRENGTH.get(name)})
        varying = [k for k in keys if len({defence_key({k: d.get(k)}) for d in items}) > 1]  # 1 == 1.0
        for d in items:
            extra = ", ".join(f"{k}={_value_text(d.get(k))}" for k in varying)
            labels[defence_key(d)] = f"{name} ({extra})" if extra else name
    return labels


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else NOT_APPLICABLE if value is None else str(value)


def _row_order(row: DefenceRow) -> tuple:
    rank = ORDER.index(row.name) if row.name in ORDER else len(ORDER)
    strength = row.strength if row.strength is not None else -math.inf
    direction = -1 if row.name in STRONGER_WHEN_SMALLER else 1
    return (rank, row.name, row.label, tuple(_sort_key(v) for v in row.others), direction * strength, not row.adaptive)


def table_metrics(rows: list[DefenceRow]) -> list[str]:
    """The leakage metrics some row has (LPIPS also when only absent)."""
    return [m for m in TABLE_METRICS if any(r.group.stat(m) != NOT_APPLICABLE for r in rows)]


# --------------------------------------------------------------------------- md and csv

def _epsilon_text(values: list[float]) -> str:
    def one(value: float) -> str:
        return "∞" if math.isinf(value) else f"{value:.3g}"
    if not values:
        return NOT_APPLICABLE
    return one(values[0]) if len(values) == 1 else f"{one(values[0])}–{one(values[-1])}"


def markdown_rows(rows: list[DefenceRow], others: list[str], metrics: list[str]) -> str:
    """The GitHub table: defence, strength, other swept keys, attacker, n, the leakage cells
    (as the main table's), epsilon and utility."""
    header = ["defence", "strength", *others, "attacker", "n", *(METRICS[m][0] for m in metrics),
              "epsilon", "utility (test acc.)"]
    align = ["---", "--:", *["---"] * len(others), "---", "--:", *["--:"] * (len(metrics) + 2)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        n = len(r.group.records)
        cells = [r.label, r.strength_text, *(NOT_APPLICABLE if v is None else v for v in r.others), r.attacker,
                 str(n), *(_cell(r.group.stat(m), METRICS[m][1], n) for m in metrics),
                 _epsilon_text(r.epsilons()), _cell(r.utility, UTILITY_DECIMALS)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(rows: list[DefenceRow], others: list[str], metrics: list[str]) -> str:
    """defences.csv: the table's rows with numbers: ``defence`` (the row label), ``strength``,
    the other swept keys, ``attacker`` (empty for none), ``n``, ``jobs``, ``defence_params``
    (the defence as JSON, sorted keys), per metric ``_mean``, ``_std``, ``_ci_low``,
    ``_ci_high``, ``_n`` (as report.csv), ``epsilon`` (values space-separated, empty but for
    dp_sgd) and ``utility_mean`` ... ``utility_n`` (``not measured`` in ``utility_mean``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["defence", "strength", *others, "attacker", "n", "jobs", "defence_params",
                     *(f"{m}_{s}" for m in metrics for s in CSV_STATS), "epsilon",
                     *(f"utility_{s}" for s in CSV_STATS)])
    for r in rows:
        strength = r.defence.get(STRENGTH.get(r.name, "")) if r.strength is not None else ""
        row: list[Any] = [r.label, strength, *("" if v is None else v for v in r.others),
                          "" if r.name == "none" else r.attacker, len(r.group.records), len(r.group.jobs),
                          json.dumps(r.defence, sort_keys=True)]
        for m in metrics:
            row += _csv_cells(r.group.stat(m))
        row.append(" ".join(repr(e) for e in r.epsilons()))
        writer.writerow(row + _csv_cells(r.utility))
    return buffer.getvalue()


def _mean_image_psnr(rows: list[DefenceRow]) -> Stat | None:
    """The mean image's PSNR (noise floor), pooled over every trial of the section's jobs."""
    for reference, _, cells in noise_floor_rows([r.group for r in rows]):
        if reference == "mean_image" and isinstance(cells.get("psnr_mean"), Stat):
            return cells["psnr_mean"]
    return None


def _privacy_note(rows: list[DefenceRow]) -> str:
    """Which delta and accountant the epsilons are at."""
    seen = {(p.get("delta"), p.get("accountant")) for r in rows for j in r.group.jobs
            if (p := _privacy(j)) and _epsilon(p) is not None}
    parts = [f"δ = {_value_text(delta)}" + (f", {accountant}" if accountant else "") for delta, accountant in sorted(
        seen, key=lambda item: (_sort_key(item[0]), str(item[1])))]
    return f" ({'; '.join(parts)})" if parts else ""


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return str(path)


def _train_note(train_jobs: list[Job], folder: Path) -> str:
    """The training jobs that gave no test accuracy, and why."""
    lines = []
    for job in train_jobs:
        accuracy = (job.metrics or {}).get("test_accuracy")
        if finite_numbers([accuracy]):
            continue
        if job.status != "done" or not job.metrics:
            why = job.status + (f": {job.error}" if job.error else f": {job.unreadable}" if job.unreadable else "")
        else:
            why = "no test accuracy (holdout=0?)"
        lines.append(f"- `{_relative(job.path, folder)}`: {why}")
    if not lines:
        return ""
    return "\n".join([f"Training jobs without a test accuracy ({len(lines)}; not in the utility column):", "", *lines]) + "\n"


# --------------------------------------------------------------------------- the section

@dataclass
class DefenceReport:
    """What :func:`defence_report` made: the markdown section, defences.csv's text and the figures."""

    markdown: str
    csv: str
    figures: list[Path]


def defence_report(attack_jobs: list[Job], train_jobs: list[Job], swept: list[str], folder: Path,
                   plots: bool = True) -> DefenceReport | None:
    """The ``## Defences`` section, its CSV and (with ``plots``, i.e. matplotlib) its figures,
    saved into ``folder``; None when no attack job has a defence or a naive attacker."""
    rows = defence_rows(attack_jobs, train_jobs, swept)
    if not rows:
        return None
    others = [k for k in swept if is_other_key(k)]
    metrics = table_metrics(rows)
    log.info("defences: %d rows, %d training jobs", len(rows), len(train_jobs))
    figures: list[Path] = []
    figure_notes: list[str] = []
    if plots:
        for metric in FIGURE_METRICS:
            path = folder / f"fig_defence_{metric}.png"
            if metric in metrics and strength_figure(metric, rows, path):
                figures.append(path)
        path = folder / "fig_defence_utility.png"
        if not train_jobs:
            figure_notes.append("No utility figure: no training jobs (`deepleak train` with the same defence) "
                                "under the given paths.")
        elif utility_figure(rows, path):
            figures.append(path)
        else:
            figure_notes.append("No utility figure: no defence has both a measured utility and a PSNR of the "
                                "adaptive attacker.")

    floor = _mean_image_psnr(rows) if "psnr_mean" in metrics else None
    done = Counter(j.status for j in train_jobs)
    intro = ("Leakage under each client-side defence, against its strength: the *adaptive* attacker knows the "
             "defence's public parameters (`attack.adaptive=true`), the *naive* one attacks as if there were none; "
             "`none` is the undefended reference, once (both attackers are the same without a defence). "
             "Cells as in the table above. epsilon: DP-SGD's (ε, δ) for one shared update"
             f"{_privacy_note(rows)}, `-` for other defences. utility: the final test accuracy of `deepleak train` "
             "under the same defence (all its parameters equal), over its jobs (seeds), `mean ± std [95% CI]`; "
             f"`{NOT_MEASURED}`: no training job with that defence")
    intro += f" ({len(train_jobs)} training jobs: {_status_text(done)})." if train_jobs else " (none was given)."
    if floor is not None:
        intro += f" Noise floor (mean image): PSNR {_cell(floor, METRICS['psnr_mean'][1])} dB."
    md = ["## Defences", "", intro, "", markdown_rows(rows, others, metrics)]
    note = _train_note(train_jobs, folder)
    if note:
        md.append(note)
    if figure_notes:
        md += [" ".join(figure_notes), ""]
    md += [f"![{p.stem}]({p.name})\n" for p in figures]
    return DefenceReport("\n".join(md), csv_rows(rows, others, metrics), figures)


# --------------------------------------------------------------------------- figures

def strength_figure(metric: str, rows: list[DefenceRow], path: Path) -> bool:
    """``metric`` against strength, one panel per defence: the adaptive attacker a solid line,
    the naive one dashed in the same colour (one colour per value of the other swept keys),
    error bars the 95 % interval, ``none`` a dotted line and, for PSNR, the mean image's
    noise floor a dashed grey line. False (nothing written) when no defended row has the metric."""
    from matplotlib.figure import Figure  # only the report needs matplotlib

    panels: dict[str, list[DefenceRow]] = {}
    for r in rows:
        if r.name != "none" and r.strength is not None and isinstance(r.group.stat(metric), Stat):
            panels.setdefault(r.label, []).append(r)
    if not panels:
        return False
    title = METRICS[metric][0]
    combos = sorted({r.others for r in rows}, key=lambda c: tuple(_sort_key(v) for v in c))
    colours = {c: f"C{i % 10}" for i, c in enumerate(combos)}
    settings = {r.others: f", {r.setting}" if len(combos) > 1 else "" for r in rows}
    references = [r for r in rows if r.name == "none" and isinstance(r.group.stat(metric), Stat)]
    floor = _mean_image_psnr(rows) if metric == "psnr_mean" else None
    columns = min(4, len(panels))
    lines = -(-len(panels) // columns)
    fig = Figure(figsize=(3.3 * columns + 0.5, 2.9 * lines + 0.6), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False, sharey=True)
    for ax, (label, items) in zip(axes.flat, panels.items()):
        for c in combos:
            for adaptive in (True, False):
                points = sorted(((r.strength, r.group.stat(metric)) for r in items
                                 if r.others == c and r.adaptive == adaptive), key=lambda p: p[0])
                if points:
                    ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                                yerr=[_error(s) for _, s in points], color=colours[c],
                                linestyle="-" if adaptive else "--", marker=MARKERS[0 if adaptive else 1],
                                capsize=3, alpha=0.85, label=("adaptive" if adaptive else "naive") + settings[c])
        for r in references:
            ax.axhline(r.group.stat(metric).mean, linestyle=":", linewidth=1.2,
                       color="grey" if len(combos) == 1 else colours[r.others],
                       label="no defence" + settings[r.others])
        if floor is not None:
            ax.axhline(floor.mean, linestyle="--", linewidth=1, color="grey", label="noise floor: mean image")
        _strength_axis(ax, items[0].name, sorted({r.strength for r in items}))
        ax.set_title(label, fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
        if metric.endswith("accuracy"):
            ax.set_ylim(-0.03, 1.03)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for row_axes in axes:
        row_axes[0].set_ylabel(title)
    fig.suptitle(f"{title} against defence strength: mean over trials, bars = 95% CI")
    _save(fig, path)
    return True


def _strength_axis(ax: Any, name: str, values: list[float]) -> None:
    """Log scale for noise's std and dp_sgd's noise multiplier (and any ladder spanning a
    factor >= 8) when every value is > 0, else linear; reversed where a smaller value is the
    stronger defence (quantize's bits, clip's max_norm), so that stronger is always to the right."""
    key = STRENGTH.get(name, "strength")
    if values and values[0] > 0 and (name in LOG_STRENGTH or values[-1] / values[0] >= 8):
        ax.set_xscale("log", base=10 if name in LOG_STRENGTH or values[-1] / values[0] >= 100 else 2)
    if len(values) <= 8:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
    reversed_axis = name in STRONGER_WHEN_SMALLER
    if reversed_axis:
        ax.invert_xaxis()
    ax.set_xlabel(f"{key} ({'axis reversed; ' if reversed_axis else ''}stronger →)")


def utility_figure(rows: list[DefenceRow], path: Path) -> bool:
    """PSNR of the adaptive attacker against utility (test accuracy), one marker series per
    defence with its points annotated by strength and joined weak to strong by a thin line, the
    undefended point a large black star; bars = 95 % intervals on both axes; only rows whose
    utility was measured. False (nothing written) when no row has both."""
    from matplotlib.figure import Figure

    points = [r for r in rows if (r.adaptive or r.name == "none") and isinstance(r.utility, Stat)
              and isinstance(r.group.stat("psnr_mean"), Stat)]
    if not points:
        return False
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    series: dict[tuple, list[DefenceRow]] = {}
    for r in points:
        series.setdefault((r.label, r.others), []).append(r)
    defended = 0
    for items in series.values():
        psnr = [r.group.stat("psnr_mean") for r in items]
        setting = f", {items[0].setting}" if items[0].setting else ""
        if items[0].name == "none":
            ax.errorbar([r.utility.mean for r in items], [s.mean for s in psnr],
                        xerr=[_error(r.utility) for r in items], yerr=[_error(s) for s in psnr],
                        fmt="*", markersize=16, color="black", markeredgecolor="gold", capsize=3, zorder=5,
                        label=f"no defence{setting}")
            continue
        colour, marker = f"C{defended % 10}", MARKERS[defended % len(MARKERS)]
        defended += 1
        ax.plot([r.utility.mean for r in items], [s.mean for s in psnr], color=colour, linewidth=0.8, alpha=0.5)
        ax.errorbar([r.utility.mean for r in items], [s.mean for s in psnr],
                    xerr=[_error(r.utility) for r in items], yerr=[_error(s) for s in psnr],
                    fmt=marker, color=colour, capsize=2, alpha=0.85, label=items[0].label + setting)
        for r, s in zip(items, psnr):
            ax.annotate(r.strength_text, (r.utility.mean, s.mean), textcoords="offset points", xytext=(4, 4),
                        fontsize="x-small", color=colour)
    floor = _mean_image_psnr(rows)
    if floor is not None:
        ax.axhline(floor.mean, linestyle="--", linewidth=1, color="grey", label="noise floor: mean image")
    ax.set_xlim(-0.03, 1.03)  # an accuracy (an interval past 1 is cut, as in the main figures)
    ax.set_xlabel("utility: test accuracy of deepleak train under the defence")
    ax.set_ylabel(f"{METRICS['psnr_mean'][0]}, adaptive attacker")
    ax.set_title("Leakage against utility (labels: strength), bars = 95% CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    _save(fig, path)
    return True
