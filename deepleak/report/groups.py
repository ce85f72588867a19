"""Grouping jobs into settings (all swept values equal but the seed), their trials pooled,
and the statistics of a metric over a group."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepleak.report.constants import ABSENT, IGNORED_KEYS, NOT_APPLICABLE
from deepleak.report.jobs import Job
from deepleak.report.stats import Stat, describe, finite_numbers


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

    def stat(self, metric: str) -> Stat | str:
        """Mean, std (ddof = 1) and 95 % interval over the pooled trials (:func:`describe`),
        ``"absent"`` for LPIPS that was not computed, ``"-"`` for a metric no trial has."""
        records = self.records
        values = finite_numbers([r.get(metric) for r in records])
        if values:
            return describe(values)
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
