"""The report's tables (GitHub markdown, CSV, LaTeX booktabs) and the formatting of their cells."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any, Iterable

from deepleak.report.constants import METRICS, NOT_APPLICABLE, UNREADABLE
from deepleak.report.groups import Group
from deepleak.report.noise_floor import noise_floor_rows
from deepleak.report.stats import Stat

CSV_STATS = ("mean", "std", "ci_low", "ci_high", "n")  # the CSV columns of a metric: <metric>_<stat>
#: What a cell is, said in report.md's header and report.tex's first line.
CELL_NOTE = ("Each cell: mean ± std [95% CI] over the n trials of the setting, pooled over its jobs (seeds): "
             "std with ddof = 1, CI = mean ± t(0.975, n-1)·std/√n (Student t). With one trial, `mean (n = 1)`: "
             "no std or interval. `(n = k)`: the metric exists in only k of the n trials.")
TEX_CELL_NOTE = ("cells: $mean \\pm std$ [95% CI], std with ddof = 1, CI = mean +- t(0.975, n-1) std / sqrt(n); "
                 "n = 1: $mean$ ($n = 1$), no std or interval")


def _status_text(counts: Counter) -> str:
    order = ("done", "failed", UNREADABLE, "interrupted", "running", "unknown")
    names = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    return ", ".join(f"{counts[s]} {s}" for s in names)


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.00"


def _cell(stat: Stat | str, decimals: int, n: int | None = None, tex: bool = False) -> str:
    """``mean ± std [low, high]`` (the 95 % interval), ``mean (n = 1)`` for one value (no std,
    no interval); `` (n = k)`` is added where the metric's k differs from the row's ``n``.
    A mark (``-``, ``absent``, ``not recorded``) is shown as it is (``--`` in LaTeX)."""
    if isinstance(stat, str):
        return ("--" if stat == NOT_APPLICABLE else _tex(stat)) if tex else stat
    mean = _number(stat.mean, decimals)
    count = f" ($n = {stat.n}$)" if tex else f" (n = {stat.n})"
    if stat.std is None:
        return (f"${mean}$" if tex else mean) + count
    spread = f"{_number(stat.std, decimals)}"
    interval = f"[{_number(stat.low, decimals)}, {_number(stat.high, decimals)}]"
    text = f"${mean} \\pm {spread}$ {interval}" if tex else f"{mean} ± {spread} {interval}"
    return text + (count if n is not None and stat.n != n else "")


def _shown(value: str | None) -> str:
    return NOT_APPLICABLE if value is None else value


def reported_metrics(groups: list[Group]) -> list[str]:
    """The metrics some group has (LPIPS also when it is only absent)."""
    return [m for m in METRICS if any(g.stat(m) != NOT_APPLICABLE for g in groups)]


def _floor_rows(groups: list[Group], metrics: list[str]) -> list[tuple[str, str, dict[str, Stat | str]]]:
    """The noise-floor rows when the table has a PSNR column, else none."""
    return noise_floor_rows(groups) if "psnr_mean" in metrics else []


def _floor_n(cells: dict[str, Stat | str]) -> str:
    return next((str(c.n) for c in cells.values() if not isinstance(c, str)), "")


def markdown_table(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """The GitHub table: swept values (``setting`` when nothing is swept), n, seeds, job
    statuses, then one cell per metric (:func:`_cell`); an image table (with PSNR) ends in
    the noise-floor rows, pooled over all its trials."""
    show_seeds = len({s for g in groups for s in g.seeds}) > 1
    keys = swept or ["setting"]
    header = [*keys, "n", *(["seeds"] if show_seeds else []), "jobs", *(METRICS[m][0] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("--:" if h == "n" or i >= len(header) - len(metrics) else "---"
                            for i, h in enumerate(header)) + "|"]

    def add(row: list[str]) -> None:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")

    for g in groups:
        row = [*(_shown(v) for v in g.values), str(len(g.records))] if swept else ["all jobs", str(len(g.records))]
        if show_seeds:
            row.append(",".join(map(str, g.seeds)))
        row.append(_status_text(g.statuses))
        add(row + [_cell(g.stat(m), METRICS[m][1], len(g.records)) for m in metrics])
    for _, label, cells in _floor_rows(groups, metrics):
        row = [label, *[""] * (len(keys) - 1), _floor_n(cells), *([""] if show_seeds else []), ""]
        add(row + [_cell(cells.get(m, NOT_APPLICABLE), METRICS[m][1]) for m in metrics])
    return "\n".join(lines) + "\n"


def _csv_cells(stat: Stat | str) -> list[Any]:
    """``mean, std, ci_low, ci_high, n``: empty where undefined (std and interval at n = 1),
    the mark in ``mean`` for ``absent`` and ``not recorded``."""
    if isinstance(stat, str):
        return [stat if stat != NOT_APPLICABLE else "", "", "", "", ""]
    return [repr(v) if v is not None else "" for v in (stat.mean, stat.std, stat.low, stat.high)] + [stat.n]


def csv_text(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """Plain CSV, one row per group: swept values, n, seeds, job counts, then per metric
    ``<metric>_mean``, ``_std`` (ddof = 1), ``_ci_low``, ``_ci_high`` (95 % t interval) and
    ``_n`` (std and interval empty for n = 1; all empty when the metric does not apply;
    ``_mean`` is ``absent`` for absent LPIPS). With a PSNR column the noise-floor rows follow,
    marked in the last column ``reference`` (``uniform``, ``mean_image``; empty for a group),
    their swept values and job counts empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    floors = _floor_rows(groups, metrics)
    writer.writerow([*swept, "n", "seeds", "jobs", "done", "failed", UNREADABLE, "other",
                     *(f"{m}_{s}" for m in metrics for s in CSV_STATS), *(["reference"] if floors else [])])
    for g in groups:
        counts = g.statuses
        row: list[Any] = [*("" if v is None else v for v in g.values), len(g.records),
                          " ".join(map(str, g.seeds)), len(g.jobs), counts["done"], counts["failed"],
                          counts[UNREADABLE], len(g.jobs) - counts["done"] - counts["failed"] - counts[UNREADABLE]]
        for m in metrics:
            row += _csv_cells(g.stat(m))
        writer.writerow(row + ([""] if floors else []))
    for reference, _, cells in floors:
        row = [*[""] * len(swept), _floor_n(cells), "", "", "", "", "", ""]
        for m in metrics:
            row += _csv_cells(cells.get(m, NOT_APPLICABLE))
        writer.writerow(row + [reference])
    return buffer.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_TEX_ESCAPES.get(char, char) for char in text)


def tex_table(swept: list[str], groups: list[Group], metrics: list[str]) -> str:
    """A booktabs tabular (needs ``\\usepackage{booktabs}``): swept values, n, then
    ``$mean \\pm std$ [95 % interval]`` per metric as in :func:`markdown_table`, the
    noise-floor rows under a ``\\midrule``; a comment line first says what a cell is."""
    keys = swept or ["setting"]
    spec = "l" * len(keys) + "r" * (1 + len(metrics))
    header = [*(_tex(k) for k in keys), "$n$", *(_tex(METRICS[m][0]) for m in metrics)]
    lines = [f"% {TEX_CELL_NOTE}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(header) + r" \\",
             "\\midrule"]
    for g in groups:
        row = [*(_tex(_shown(v)) if v is not None else "--" for v in g.values)] if swept else ["all jobs"]
        row.append(str(len(g.records)))
        row += [_cell(g.stat(m), METRICS[m][1], len(g.records), tex=True) for m in metrics]
        lines.append(" & ".join(row) + r" \\")
    floors = _floor_rows(groups, metrics)
    if floors:
        lines.append("\\midrule")
    for _, label, cells in floors:
        row = [_tex(label), *[""] * (len(keys) - 1), _floor_n(cells)]
        row += [_cell(cells.get(m, NOT_APPLICABLE), METRICS[m][1], tex=True) for m in metrics]
        lines.append(" & ".join(row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _label(keys: list[str], values: Iterable[str | None]) -> str:
    return ", ".join(f"{k}={_shown(v)}" for k, v in zip(keys, values)) or "all jobs"
