"""The report's tables (GitHub markdown, CSV, LaTeX booktabs) and the formatting of their cells."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any, Iterable

from deepleak.report.constants import ABSENT, METRICS, NOT_APPLICABLE
from deepleak.report.groups import Group


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


def _label(keys: list[str], values: Iterable[str | None]) -> str:
    return ", ".join(f"{k}={_shown(v)}" for k, v in zip(keys, values)) or "all jobs"
