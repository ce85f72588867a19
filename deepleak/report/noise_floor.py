"""The noise-floor rows of an image table: the PSNR and SSIM of uniform noise and of the data
set's mean image against the private batches, pooled over every trial of the table."""

from __future__ import annotations

from typing import Any

from deepleak.report.constants import (
    NOISE_FLOOR_COLUMNS,
    NOISE_FLOORS,
    NOT_APPLICABLE,
    NOT_RECORDED,
)
from deepleak.report.groups import Group
from deepleak.report.stats import Stat, describe, finite_numbers


def noise_floor_rows(groups: list[Group]) -> list[tuple[str, str, dict[str, Stat | str]]]:
    """``(reference, label, {column: cell})`` per reference in :data:`NOISE_FLOORS`, the cells
    for the columns in :data:`NOISE_FLOOR_COLUMNS`: the statistics over every trial that
    recorded it, ``"not recorded"`` when no trial of the table did (runs made before the noise
    floor), ``"-"`` when every trial recorded it as null (the mean image of an imported update)."""
    records = [r for g in groups for r in g.records]
    recorded = any(isinstance(r.get("noise_floor"), dict) for r in records)
    rows = []
    for reference, label in NOISE_FLOORS.items():
        cells: dict[str, Stat | str] = {}
        for column, key in NOISE_FLOOR_COLUMNS.items():
            values = finite_numbers([_score(r, reference, key) for r in records])
            cells[column] = describe(values) if values else NOT_APPLICABLE if recorded else NOT_RECORDED
        rows.append((reference, label, cells))
    return rows


def _score(record: dict[str, Any], reference: str, key: str) -> Any:
    floor = record.get("noise_floor")
    scores = floor.get(reference) if isinstance(floor, dict) else None
    return scores.get(key) if isinstance(scores, dict) else None
