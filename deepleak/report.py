"""``deepleak report DIR [DIR ...]``: tables and figures over the jobs of sweeps and runs.

A *job* is any directory under the given paths that holds ``metrics.json`` or a ``status``
marker (a job that failed before its first trial has no metrics, and is still reported);
the ``previous-N/`` attempts that ``resume=true`` moved aside are not jobs.
Jobs are grouped by their Hydra overrides (``.hydra/overrides.yaml``), leaving out
``hydra.*``, ``resume``, ``threads``, ``seed`` and ``first_trial``: jobs that differ only in
the seed are repeats, jobs that differ only in ``first_trial`` are parts of one setting's
trials, and in both cases their per-trial records are pooled. Where one job sets a key that another
leaves at its default, the other's value is read from its composed config (the group
choice in ``.hydra/hydra.yaml`` for a config group, ``.hydra/config.yaml`` for a value),
so sweeps with different override lists can be reported together.

Every metric is the mean and the population standard deviation (``ddof=0``, as in
``metrics.json``'s summary) of the per-trial values of all jobs in a group. The report is
written into a new directory, ``OUT/report/`` (``report-1/``, ``report-2/``, ... when that
exists), so nothing already written is overwritten:

    report.md   a GitHub table (mean ± std), the jobs that did not finish, figures
    report.csv  one row per group: swept values, n, job counts, <metric>_mean, <metric>_std
    report.tex  a booktabs tabular
    fig_<metric>.png   the metric against batch size (or the first numeric swept key), one
                       line per value of the other swept keys, error bars = std
    montage.png        the ``grid.png`` of trial 0 (originals above reconstructions) of
                       each group, titled with its setting (montage-2.png ... past 12 rows)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from deepleak.errors import DeepleakError
from deepleak.runs import ERROR_FILE, METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)

#: The metrics reported, with the header and the number of decimals used in md and tex.
METRICS: dict[str, tuple[str, int]] = {
    "label_accuracy": ("label acc.", 3),
    "count_accuracy": ("count acc.", 3),
    "psnr_mean": ("PSNR (dB)", 2),
    "ssim_mean": ("SSIM", 3),
    "lpips_mean": ("LPIPS", 3),
}
#: Override keys that never separate groups (seed: a repeat; first_trial: a part of the same
#: trials; the others change no result).
IGNORED_KEYS = ("seed", "first_trial", "resume", "threads")
REPORT_NAME = "report"
MARKERS = "osD^vP*X"  # lines that coincide stay visible
MONTAGE_ROWS = 12  # grids per montage page
ABSENT = "absent"  # LPIPS not computed (no AlexNet weights): said, never shown as a number
NOT_APPLICABLE = "-"  # the metric does not exist for this group (e.g. PSNR with attack=none)


# --------------------------------------------------------------------------- reading jobs

@dataclass
class Job:
    """One run dir: where it is, how it ended, what it was asked for and what it measured."""

    path: Path
    status: str
    error: str | None
    overrides: dict[str, str]
    choices: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any] | None

    @property
    def records(self) -> list[dict[str, Any]]:
        """The per-trial records in ``metrics.json`` (none when it is missing)."""
        return list((self.metrics or {}).get("per_trial") or [])

    @property
    def seed(self) -> str | None:
        """The seed as text (from metrics.json, else the config), None if unknown."""
        if self.metrics and self.metrics.get("seed") is not None:
            return _text(self.metrics["seed"])
        return self.value("seed")

    def value(self, key: str) -> str | None:
        """The job's value for an override key: the override if given, else the config group
        choice, else the scalar in the composed config; None when none of these has it."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return _text(self.choices[key])
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if isinstance(node, (dict, list)) else _text(node)


def _text(value: Any) -> str:
    """A config scalar written as it would be in an override (``true``, ``null``, ``4``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _parse_overrides(lines: Iterable[Any]) -> dict[str, str]:
    """``["batch_size=2", "+scenario=fedsgd"]`` -> ``{"batch_size": "2", "scenario": "fedsgd"}``.

    The ``+``/``++`` prefixes are dropped (appending a key is the same setting); a deletion
    ``~key`` is kept under the key with the value ``~``.
    """
    result: dict[str, str] = {}
    for line in lines:
        text = str(line)
        key, _, value = text.partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = "~" if deleted else value
    return result


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError) as error:
        log.warning("cannot read %s: %s", path, error)
        return None


def read_job(path: Path) -> Job:
    """Read one run dir; unreadable pieces are logged and left empty, never fatal."""
    path = Path(path)
    status_file = path / STATUS_FILE
    status = status_file.read_text().strip() if status_file.is_file() else ""
    error_file = path / ERROR_FILE
    error = None
    if error_file.is_file():
        lines = error_file.read_text().strip().splitlines()
        error = lines[0].strip() if lines else None

    metrics = None
    if (path / METRICS_FILE).is_file():
        try:
            metrics = json.loads((path / METRICS_FILE).read_text())
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", path / METRICS_FILE, exc)
            error = error or f"unreadable {METRICS_FILE}: {exc}"
    if not status:
        status = "done" if metrics and metrics.get("trials_done", 0) >= metrics.get("trials", 1) else "unknown"

    hydra_dir = path / ".hydra"
    overrides = _parse_overrides(_load_yaml(hydra_dir / "overrides.yaml") or [])
    hydra_cfg = _load_yaml(hydra_dir / "hydra.yaml") or {}
    choices = (((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {})
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    config = _load_yaml(hydra_dir / "config.yaml") or {}
    return Job(path, status, error, overrides, choices, config if isinstance(config, dict) else {}, metrics)


def _numbered(name: str, stem: str) -> bool:
    """``stem`` or ``stem-N``."""
    head, _, tail = name.partition("-")
    return head == stem and (not tail or tail.isdigit())


def _skipped_dir(name: str) -> bool:
    """Not searched for jobs: Hydra's record, images, reports this module wrote
    (``report``, ``report-N``) and the unfinished attempts a resumed sweep moved aside
    (``previous-N``, see :func:`deepleak.runs.archive_previous`): the rerun replaces them."""
    return name in (".hydra", "images") or _numbered(name, REPORT_NAME) or (
        name.startswith("previous-") and _numbered(name, "previous"))


def find_jobs(paths: Iterable[str | Path]) -> list[Job]:
    """Every job dir under ``paths`` (each path may itself be a job), in path order.

    A job dir holds ``metrics.json`` or ``status``; see :func:`_skipped_dir` for the
    folders that are not searched.
    """
    found: dict[Path, None] = {}
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            raise DeepleakError(f"no such directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _skipped_dir(d))
            if METRICS_FILE in filenames or STATUS_FILE in filenames:
                found.setdefault(Path(dirpath).resolve(), None)
    return [read_job(p) for p in found]


# --------------------------------------------------------------------------- grouping

@dataclass
class Group:
    """Jobs with the same setting (all swept values equal but the seed), trials pooled."""

    values: tuple[str | None, ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for job in self.jobs for r in job.records]

    @property
    def statuses(self) -> Counter:
        return Counter(job.status for job in self.jobs)

    @property
    def seeds(self) -> list[Any]:
        return sorted({job.seed for job in self.jobs if job.seed is not None}, key=_sort_key)

    def stat(self, metric: str) -> tuple[float, float, int] | str:
        """``(mean, std, n)`` over the pooled trials, ``"absent"`` for LPIPS that was not
        computed, ``"-"`` for a metric no trial has."""
        records = self.records
        values = [r[metric] for r in records
                  if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
                  and math.isfinite(r[metric])]
        if values:
            return float(np.mean(values)), float(np.std(values)), len(values)
        if metric == "lpips_mean" and any("lpips_mean" in r for r in records):
            return ABSENT
        return NOT_APPLICABLE

    def absent_reasons(self) -> set[str]:
        return {r["lpips_absent_reason"] for r in self.records
                if r.get("lpips_mean") is None and r.get("lpips_absent_reason")}

    def grid(self) -> Path | None:
        """Trial 0's ``grid.png`` of the job with the lowest seed that has one."""
        for job in sorted(self.jobs, key=lambda j: _sort_key(j.seed)):
            path = job.path / "images" / "trial_000" / "grid.png"
            if path.is_file():
                return path
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sort_key(value: Any) -> tuple:
    """Numbers before text, numbers by value (2 < 10), None last."""
    if value is None:
        return (2, 0.0, "")
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def group_jobs(jobs: list[Job]) -> tuple[list[str], dict[str, str | None], list[Group]]:
    """Group jobs by their settings.

    Returns ``(swept, fixed, groups)``: the keys whose value differs between jobs (the
    table's columns, in the order they first appear in the overrides), the keys that are
    the same for every job with their value, and the groups sorted by the swept values.
    """
    keys: dict[str, None] = {}
    for job in jobs:
        for key in job.overrides:
            if key.startswith(("hydra.", "hydra/")) or key in IGNORED_KEYS:
                continue
            keys.setdefault(key, None)
    swept = [k for k in keys if len({job.value(k) for job in jobs}) > 1]
    fixed = {k: jobs[0].value(k) for k in keys if k not in swept} if jobs else {}
    groups: dict[tuple, Group] = {}
    for job in jobs:
        values = tuple(job.value(k) for k in swept)
        groups.setdefault(values, Group(values)).jobs.append(job)
    ordered = sorted(groups.values(), key=lambda g: tuple(_sort_key(v) for v in g.values))
    return swept, fixed, ordered


# --------------------------------------------------------------------------- tables

def _status_text(counts: Counter) -> str:
    order = ("done", "failed", "interrupted", "running", "unknown")
    names = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    return ", ".join(f"{counts[s]} {s}" for s in names)


def _cell(stat: tuple[float, float, int] | str, decimals: int, pm: str) -> str:
    if isinstance(stat, str):
        return stat
    mean, std, _ = stat
    return f"{mean:.{decimals}f}{pm}{std:.{decimals}f}"


def _shown(value: str | None) -> str:
    return NOT_APPLICABLE if value is None else value


def reported_metrics(groups: list[Group]) -> list[str]:
    """The metrics some group has (LPIPS also when it is only absent)."""
    return [m for m in METRICS if any(g.stat(m) != NOT_APPLICABLE for g in groups)]


def markdown_table(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """The GitHub table: swept values, n, seeds, job statuses, then ``mean ± std``."""
    show_seeds = len({s for g in groups for s in g.seeds}) > 1
    header = [*swept, "n", *(["seeds"] if show_seeds else []), "jobs", *(METRICS[m][0] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("--:" if h == "n" or i >= len(header) - len(metrics) else "---"
                            for i, h in enumerate(header)) + "|"]
    for g in groups:
        row = [*(_shown(v) for v in g.values), str(len(g.records))]
        if show_seeds:
            row.append(",".join(map(str, g.seeds)))
        row.append(_status_text(g.statuses))
        row += [_cell(g.stat(m), METRICS[m][1], " ± ") for m in metrics]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def csv_text(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """Plain CSV: swept values, n, seeds, job counts, ``<metric>_mean`` and ``<metric>_std``
    (empty when the metric does not apply; ``<metric>_mean`` is ``absent`` for absent LPIPS)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*swept, "n", "seeds", "jobs", "done", "failed", "other",
                     *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for g in groups:
        counts = g.statuses
        row: list[Any] = [*("" if v is None else v for v in g.values), len(g.records),
                          " ".join(map(str, g.seeds)), len(g.jobs), counts["done"], counts["failed"],
                          len(g.jobs) - counts["done"] - counts["failed"]]
        for m in metrics:
            stat = g.stat(m)
            if isinstance(stat, str):
                row += [stat if stat == ABSENT else "", ""]
            else:
                row += [repr(stat[0]), repr(stat[1])]
        writer.writerow(row)
    return buffer.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_TEX_ESCAPES.get(char, char) for char in text)


def tex_table(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """A booktabs tabular (needs ``\\usepackage{booktabs}``): swept values, n, mean $\\pm$ std."""
    spec = "l" * len(swept) + "r" * (1 + len(metrics))
    header = [*(_tex(k) for k in swept), "$n$", *(_tex(METRICS[m][0]) for m in metrics)]
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(header) + r" \\", "\\midrule"]
    for g in groups:
        row = [*(_tex(_shown(v)) if v is not None else "--" for v in g.values), str(len(g.records))]
        for m in metrics:
            stat = g.stat(m)
            row.append("--" if stat == NOT_APPLICABLE else _tex(stat) if isinstance(stat, str)
                       else "$" + _cell(stat, METRICS[m][1], r" \pm ") + "$")
        lines.append(" & ".join(row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures

def _label(keys: list[str], values: Iterable[str | None]) -> str:
    return ", ".join(f"{k}={_shown(v)}" for k, v in zip(keys, values)) or "all jobs"


def x_key(swept: list[str], groups: list[Group]) -> str | None:
    """``batch_size`` when it is swept, else the first swept key whose values are all
    numbers; None when there is none (the figures are then bar charts)."""
    numeric = [k for i, k in enumerate(swept) if all(_number(g.values[i]) is not None for g in groups)]
    if "batch_size" in numeric:
        return "batch_size"
    return numeric[0] if numeric else None


def metric_figure(metric: str, swept: list[str], groups: list[Group], path: Path) -> bool:
    """Plot one metric (mean, error bars = std) against the x key, one line per value of
    the other swept keys; a bar chart when no swept key is numeric. False if nothing to plot."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (only the report needs matplotlib)

    points = [(g, g.stat(metric)) for g in groups]
    points = [(g, s) for g, s in points if not isinstance(s, str)]
    if not points:
        return False
    title, _ = METRICS[metric]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xk = x_key(swept, groups)
    if xk is not None:
        xi = swept.index(xk)
        others = [k for k in swept if k != xk]
        lines: dict[tuple, list] = {}
        for g, stat in points:
            rest = tuple(v for i, v in enumerate(g.values) if i != xi)
            lines.setdefault(rest, []).append((float(g.values[xi]), stat[0], stat[1]))
        ordered = sorted(lines.items(), key=lambda item: tuple(_sort_key(v) for v in item[0]))
        for n, (rest, xs) in enumerate(ordered):
            xs.sort()
            ax.errorbar([p[0] for p in xs], [p[1] for p in xs], yerr=[p[2] for p in xs],
                        marker=MARKERS[n % len(MARKERS)], capsize=3, alpha=0.85,
                        label=_label(others, rest) if others else None)
        xs_all = sorted({float(g.values[xi]) for g, _ in points})
        if xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 8:
            ax.set_xscale("log", base=2)
        if len(xs_all) <= 12:
            ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
            ax.minorticks_off()
        ax.set_xlabel(xk)
        if others:
            ax.legend(fontsize="small")
    else:
        labels = [_label(swept, g.values) for g, _ in points]
        ax.bar(range(len(points)), [s[0] for _, s in points], yerr=[s[1] for _, s in points], capsize=3)
        ax.set_xticks(range(len(points)), labels, rotation=30 if len(points) > 3 else 0, ha="right"
                      if len(points) > 3 else "center", fontsize="small")
    ax.set_ylabel(title)
    if metric.endswith("accuracy"):
        ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{title}: mean ± std over trials")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def montage(swept: list[str], groups: list[Group], folder: Path) -> list[Path]:
    """Stack trial 0's ``grid.png`` of each group (originals above reconstructions), titled
    with the setting, MONTAGE_ROWS per page. Returns the pages written (none without images)."""
    from matplotlib.figure import Figure  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    items = [(g, g.grid()) for g in groups]
    items = [(g, p) for g, p in items if p is not None]
    pages = []
    for start in range(0, len(items), MONTAGE_ROWS):
        chunk = items[start:start + MONTAGE_ROWS]
        images = [np.asarray(Image.open(p).convert("RGB")) for _, p in chunk]
        row_height = 2.0  # inches per grid
        width = min(16.0, max(4.0, max(row_height * im.shape[1] / im.shape[0] for im in images)))
        fig = Figure(figsize=(width, (row_height + 0.35) * len(images)), layout="constrained")
        for i, ((g, _), image) in enumerate(zip(chunk, images)):
            ax = fig.add_subplot(len(images), 1, i + 1)
            ax.imshow(image, interpolation="nearest")
            ax.set_title(_label(swept, g.values), fontsize="small")
            ax.axis("off")
        name = "montage.png" if start == 0 else f"montage-{start // MONTAGE_ROWS + 1}.png"
        _save(fig, folder / name)
        pages.append(folder / name)
    return pages


def _save(fig: Any, path: Path) -> None:
    with open(path, "xb") as handle:  # "x": a file that exists is never overwritten
        fig.savefig(handle, format="png", dpi=100)


# --------------------------------------------------------------------------- the report

def new_report_dir(out: Path) -> Path:
    """Create ``out/report`` or, when it exists, the first free ``out/report-N``."""
    out.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        folder = out / (REPORT_NAME if n == 0 else f"{REPORT_NAME}-{n}")
        try:
            folder.mkdir()  # exclusive: two reports started together get two dirs
        except FileExistsError:
            continue
        return folder
    raise DeepleakError(f"no free report directory under {out}")


def _write(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)


def _not_done_section(jobs: list[Job], swept: list[str], folder: Path) -> str:
    bad = [j for j in jobs if j.status != "done"]
    if not bad:
        return ""
    lines = ["## Jobs not done", "",
             "Their finished trials (if any) are in the table above; the rest are missing.", "",
             "| job | setting | status | trials | error |", "|---|---|---|--:|---|"]
    for j in bad:
        setting = _label(swept, (j.value(k) for k in swept)) if swept else ""
        row = [_relative(j.path, folder), setting, j.status or "unknown", str(len(j.records)), j.error or ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return str(path)


def report(paths: list[str | Path], out: Path | None = None) -> Path:
    """Report every job under ``paths``; returns the new report directory.

    ``out`` defaults to the first path; the report goes to a new ``out/report`` (or
    ``report-N``). Raises DeepleakError when a path is missing or holds no job.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DeepleakError("give at least one sweep or run directory")
    jobs = find_jobs(paths)
    if not jobs:
        raise DeepleakError(f"no job (a dir with {METRICS_FILE} or {STATUS_FILE}) under {', '.join(map(str, paths))}")
    swept, fixed, groups = group_jobs(jobs)
    metrics = reported_metrics(groups)
    folder = new_report_dir(Path(out) if out is not None else paths[0])
    log.info("%d jobs in %d groups; swept: %s; writing %s", len(jobs), len(groups), ", ".join(swept) or "nothing", folder)

    figures: list[Path] = []
    montages: list[Path] = []
    figure_note = ""
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        figure_note = "No figures: matplotlib is not installed (`pip install matplotlib`).\n"
        log.warning("matplotlib is not installed: no figures")
    else:
        for m in metrics:
            path = folder / f"fig_{m}.png"
            if metric_figure(m, swept, groups, path):
                figures.append(path)
        montages = montage(swept, groups, folder)

    table = markdown_table(swept, groups, metrics)
    statuses = Counter(j.status for j in jobs)
    seeds = sorted({j.seed for j in jobs if j.seed is not None}, key=_sort_key)
    reasons = {r for g in groups for r in g.absent_reasons()}
    md = ["# deepleak report", "",
          "Sources: " + ", ".join(f"`{p}`" for p in paths), "",
          f"{len(jobs)} jobs ({_status_text(statuses)}) in {len(groups)} settings. "
          f"Swept: {', '.join(f'`{k}`' for k in swept) or 'nothing'}. "
          f"Fixed: {', '.join(f'`{k}={_shown(v)}`' for k, v in fixed.items()) or 'nothing'}. "
          f"Seeds: {', '.join(map(str, seeds)) or '-'}.", "",
          "Each cell: mean ± std (population, ddof=0) over the n trials of the setting, "
          "pooled over its jobs (seeds). `-`: the metric does not apply; `absent`: not computed.", "",
          table]
    if reasons:
        md += [" ".join(sorted(reasons)), ""]  # each says "LPIPS absent: <why>" or "LPIPS not computed: ..."
    if figures or montages or figure_note:
        md += ["## Figures", ""]
        md += [figure_note] if figure_note else []
        md += [f"![{p.stem}]({p.name})\n" for p in figures]
        md += [f"Originals (top) above reconstructions (bottom), trial 0 of each setting:\n\n![{p.stem}]({p.name})\n"
               for p in montages]
    section = _not_done_section(jobs, swept, folder)
    if section:
        md += [section]
    _write(folder / "report.md", "\n".join(md))
    _write(folder / "report.csv", csv_text(swept, groups, metrics))
    _write(folder / "report.tex", tex_table(swept, groups, metrics))
    return folder


def main(args: list[str]) -> None:
    """``deepleak report DIR [DIR ...] [--out PATH]``: write the report, print its path and
    table. A missing dir or no job ends in one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="deepleak report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep dirs, run dirs or folders of them")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to put report/ (default: the first DIR); never overwrites")
    options = parser.parse_args(args)
    try:
        folder = report(options.paths, options.out)
    except DeepleakError as error:
        sys.stderr.write(f"deepleak: error: {error}\n")
        raise SystemExit(2) from None
    sys.stdout.write(f"report written to {folder}\n\n")
    lines = (folder / "report.md").read_text().splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append(line)
    sys.stdout.write("\n".join(table) + "\n")
    not_done = sum(1 for line in lines if line.startswith("## Jobs not done"))
    if not_done:
        sys.stdout.write(f"\nsome jobs did not finish: see {folder / 'report.md'}\n")
