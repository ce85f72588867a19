"""``deepleak report DIR [DIR ...]``: tables and figures over the jobs of sweeps and runs.

Writes a new report directory (see :mod:`deepleak.report`) and is the command's entry point.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from deepleak.errors import DeepleakError
from deepleak.report.constants import REFERENCE_METRICS, REPORT_NAME, UNREADABLE
from deepleak.report.defences import CSV_NAME, defence_report, split_jobs
from deepleak.report.figures import metric_figure, montage
from deepleak.report.groups import _sort_key, group_jobs
from deepleak.report.jobs import Job, find_jobs
from deepleak.report.stages import CSV_NAME as STAGES_CSV_NAME
from deepleak.report.stages import stage_report
from deepleak.report.tables import (
    CELL_NOTE,
    _label,
    _shown,
    _status_text,
    csv_text,
    markdown_table,
    reported_metrics,
    tex_table,
)
from deepleak.runs import METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)


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
    bad = [j for j in jobs if j.status not in ("done", UNREADABLE)]  # the unreadable: in their own note
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


def _unreadable_note(jobs: list[Job], folder: Path) -> str:
    """The note under the table naming each job whose metrics.json cannot be used."""
    bad = [j for j in jobs if j.status == UNREADABLE]
    if not bad:
        return ""
    lines = [f"{UNREADABLE.capitalize()} ({len(bad)} job{'s' if len(bad) > 1 else ''}; "
             "their trials are missing from the table):", ""]
    lines += [f"- `{_relative(j.path / METRICS_FILE, folder)}`: {j.unreadable}" for j in bad]
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
    jobs, train_jobs = split_jobs(jobs)  # training runs are utility measurements, not rows of the table
    swept, fixed, groups = group_jobs(jobs)
    metrics = reported_metrics(groups)
    folder = new_report_dir(Path(out) if out is not None else paths[0])
    log.info("%d jobs in %d groups (and %d training jobs); swept: %s; writing %s", len(jobs), len(groups),
             len(train_jobs), ", ".join(swept) or "nothing", folder)

    figures: list[Path] = []
    montages: list[Path] = []
    figure_note = ""
    plots = True
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        figure_note = "No figures: matplotlib is not installed (`pip install matplotlib`).\n"
        plots = False
        log.warning("matplotlib is not installed: no figures")
    else:
        for m in metrics:
            if m in REFERENCE_METRICS:  # drawn inside its metric's figure
                continue
            path = folder / f"fig_{m}.png"
            if metric_figure(m, swept, groups, path):
                figures.append(path)
        montages = montage(swept, groups, folder)

    defences = defence_report(jobs, train_jobs, swept, folder, plots)
    stages = stage_report(jobs, swept, folder, plots)
    table = markdown_table(swept, groups, metrics)
    statuses = Counter(j.status for j in jobs)
    seeds = sorted({j.seed for j in jobs if j.seed is not None}, key=_sort_key)
    reasons = {r for g in groups for r in g.absent_reasons()}
    md = ["# deepleak report", "",
          "Sources: " + ", ".join(f"`{p}`" for p in paths), "",
          f"{len(jobs)} jobs ({_status_text(statuses) or 'no attack job'}) in {len(groups)} settings. "
          f"Swept: {', '.join(f'`{k}`' for k in swept) or 'nothing'}. "
          f"Fixed: {', '.join(f'`{k}={_shown(v)}`' for k, v in fixed.items()) or 'nothing'}. "
          f"Seeds: {', '.join(map(str, seeds)) or '-'}.", "",
          CELL_NOTE + " `-`: the metric does not apply; `absent`: not computed."
          + (" Noise floor: the PSNR/SSIM of uniform noise and of the data set's mean image against the same "
             "private images, over all trials of the table (`not recorded`: runs made before it existed)."
             if "psnr_mean" in metrics else ""), "",
          table]
    unreadable = _unreadable_note(jobs, folder)
    if unreadable:
        md += [unreadable]
    if reasons:
        md += [" ".join(sorted(reasons)), ""]  # each says "LPIPS absent: <why>" or "LPIPS not computed: ..."
    if train_jobs:
        trained = (f"Not in the table: {len(train_jobs)} training job{'s' if len(train_jobs) > 1 else ''} "
                   f"(`deepleak train`: {_status_text(Counter(j.status for j in train_jobs))}): ")
        md += [trained + ("the utility in Defences below." if defences is not None else
                          "the victims whose stages are in Training stages below." if stages is not None else
                          "a utility, shown only when some attack job has a defence."), ""]
    if defences is not None:
        md += [defences.markdown]
    if stages is not None:
        md += [stages.markdown]
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
    if defences is not None:
        _write(folder / CSV_NAME, defences.csv)
    if stages is not None:
        _write(folder / STAGES_CSV_NAME, stages.csv)
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
    if any(line.startswith(f"{UNREADABLE.capitalize()} (") for line in lines):
        sys.stdout.write(f"\nsome jobs' {METRICS_FILE} cannot be read: see {folder / 'report.md'}\n")
