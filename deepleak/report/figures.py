"""The report's figures: one metric against the swept values, and the montage of grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepleak.report.constants import MARKERS, METRICS, MONTAGE_ROWS
from deepleak.report.groups import Group, _number, _sort_key
from deepleak.report.noise_floor import noise_floor_rows
from deepleak.report.stats import Stat
from deepleak.report.tables import _label


def x_key(swept: list[str], groups: list[Group]) -> str | None:
    """``batch_size`` when it is swept, else the first swept key whose values are all
    numbers; None when there is none (the figures are then bar charts)."""
    numeric = [k for i, k in enumerate(swept) if all(_number(g.values[i]) is not None for g in groups)]
    if "batch_size" in numeric:
        return "batch_size"
    return numeric[0] if numeric else None


def metric_figure(metric: str, swept: list[str], groups: list[Group], path: Path) -> bool:
    """Plot one metric (mean, error bars = the 95 % t interval; none for n = 1) against the x
    key, one line per value of the other swept keys; a bar chart when no swept key is numeric.
    PSNR and SSIM get the noise floors' means as dashed lines. False if nothing to plot."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (only the report needs matplotlib)

    points = [(g, g.stat(metric)) for g in groups]
    points = [(g, s) for g, s in points if not isinstance(s, str)]
    if not points:
        return False
    title, _ = METRICS[metric]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xk = x_key(swept, groups)
    others: list[str] = []
    if xk is not None:
        xi = swept.index(xk)
        others = [k for k in swept if k != xk]
        lines: dict[tuple, list] = {}
        for g, stat in points:
            rest = tuple(v for i, v in enumerate(g.values) if i != xi)
            lines.setdefault(rest, []).append((float(g.values[xi]), stat.mean, _error(stat)))
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
    else:
        labels = [_label(swept, g.values) for g, _ in points]
        ax.bar(range(len(points)), [s.mean for _, s in points], yerr=[_error(s) for _, s in points], capsize=3)
        ax.set_xticks(range(len(points)), labels, rotation=30 if len(points) > 3 else 0, ha="right"
                      if len(points) > 3 else "center", fontsize="small")
    floors = _floor_lines(ax, metric, groups)
    if metric == "label_accuracy":
        floors = _label_floor_line(ax, groups, xk, swept) or floors
    if others or floors:
        ax.legend(fontsize="small")
    ax.set_ylabel(title)
    if metric.endswith("accuracy"):
        ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{title}: mean over trials, bars = 95% CI")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _error(stat: Stat) -> float:
    """The interval's half width; NaN (no bar) where it does not exist (n = 1)."""
    return stat.half_width if stat.half_width is not None else float("nan")


def _floor_lines(ax: Any, metric: str, groups: list[Group]) -> bool:
    """A dashed line at each recorded noise floor's mean (PSNR and SSIM only)."""
    drawn = False
    for n, (_, label, cells) in enumerate(noise_floor_rows(groups)):
        stat = cells.get(metric)
        if isinstance(stat, Stat):
            ax.axhline(stat.mean, linestyle="--" if n == 0 else ":", color="grey", linewidth=1, label=label)
            drawn = True
    return drawn


def _label_floor_line(ax: Any, groups: list[Group], xk: str | None, swept: list[str]) -> bool:
    """The label noise floor (a flat guess's label accuracy, metrics.json's ``label_floor``),
    grey and dashed: its mean at each x value (it depends on the batch size), or one level."""
    floors = [(g, g.stat("label_floor")) for g in groups]
    floors = [(g, s) for g, s in floors if isinstance(s, Stat)]
    if not floors:
        return False
    style = {"linestyle": "--", "color": "grey", "linewidth": 1, "label": "label floor (flat guess)"}
    if xk is None:
        ax.axhline(float(np.mean([s.mean for _, s in floors])), **style)
        return True
    xi = swept.index(xk)
    by_x: dict[float, list[float]] = {}
    for g, stat in floors:
        by_x.setdefault(float(g.values[xi]), []).append(stat.mean)
    xs = sorted(by_x)
    ax.plot(xs, [float(np.mean(by_x[x])) for x in xs], **style)
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
