"""The statistics of one cell: mean, sample std and the Student t 95 % interval of the mean."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


class Stat(NamedTuple):
    """``mean`` over ``n`` values; ``std`` with ddof = 1 and the interval ``[low, high]`` =
    mean ± t_{0.975, n-1} · std / sqrt(n). With n = 1 the std and the interval do not exist:
    they are None (never 0)."""

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """t_{0.975, n-1} · std / sqrt(n), None for n = 1."""
        return None if self.high is None else self.high - self.mean


def describe(values: Sequence[float]) -> Stat:
    """The :class:`Stat` of finite ``values`` (at least one)."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or not len(data):
        raise ValueError("describe needs a non-empty 1-D sequence")
    mean = float(data.mean())
    if len(data) == 1:
        return Stat(mean, None, 1, None, None)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(data) - 1)) * std / math.sqrt(len(data))
    return Stat(mean, std, len(data), mean - half, mean + half)


def finite_numbers(values: Sequence[object]) -> list[float]:
    """The values that are finite numbers (not bool, None, text or NaN)."""
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
