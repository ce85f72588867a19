"""The report's statistics and cells: sample std, Student t 95 % interval, n = 1, marks."""

import math

import pytest

from deepleak.report.stats import Stat, describe, finite_numbers
from deepleak.report.tables import _cell


def test_t_interval_of_a_known_sample():
    stat = describe([1, 2, 3, 4])
    assert stat.n == 4 and stat.mean == 2.5
    assert stat.std == pytest.approx(1.2909944, abs=1e-7)  # ddof = 1
    # t(0.975, 3) = 3.1824463; half width 3.1824463 * 1.2909944 / 2 = 2.0542603
    assert stat.low == pytest.approx(0.4457397, abs=1e-7)
    assert stat.high == pytest.approx(4.5542603, abs=1e-7)
    assert stat.half_width == pytest.approx(2.0542603, abs=1e-7)


def test_two_values_use_t_with_one_degree_of_freedom():
    stat = describe([0.0, 1.0])  # std 0.7071068, t(0.975, 1) = 12.7062047
    assert stat.low == pytest.approx(0.5 - 12.7062047 * 0.7071068 / math.sqrt(2), abs=1e-6)
    assert stat.high == pytest.approx(6.8531024, abs=1e-6)


def test_one_value_has_no_std_and_no_interval():
    assert describe([27.47]) == Stat(27.47, None, 1, None, None)
    assert describe([27.47]).half_width is None


def test_equal_values_have_a_zero_width_interval():
    assert describe([3.0, 3.0, 3.0]) == Stat(3.0, 0.0, 3, 3.0, 3.0)


def test_no_values_is_an_error():
    with pytest.raises(ValueError):
        describe([])


def test_finite_numbers_drop_marks_bools_and_nan():
    assert finite_numbers([1, 2.5, None, "x", True, float("nan"), float("inf"), {"a": 1}]) == [1.0, 2.5]


def test_markdown_cells():
    assert _cell(describe([1, 2, 3, 4]), 2) == "2.50 ± 1.29 [0.45, 4.55]"
    assert _cell(Stat(27.47, 2.42, 9, 25.74, 29.20), 2, 9) == "27.47 ± 2.42 [25.74, 29.20]"
    assert _cell(describe([27.47]), 2, 1) == "27.47 (n = 1)"  # never a fake 0.00 std
    assert _cell(describe([27.47]), 2, 3) == "27.47 (n = 1)"
    assert _cell(describe([1, 2, 3, 4]), 3, 5) == "2.500 ± 1.291 [0.446, 4.554] (n = 4)"  # 4 of 5 trials
    assert _cell(Stat(0.0, 0.0, 2, -1e-9, 1e-9), 3) == "0.000 ± 0.000 [0.000, 0.000]"  # no "-0.000"
    assert _cell("-", 2) == "-" and _cell("absent", 2) == "absent" and _cell("not recorded", 2) == "not recorded"


def test_tex_cells():
    assert _cell(describe([1, 2, 3, 4]), 2, 4, tex=True) == r"$2.50 \pm 1.29$ [0.45, 4.55]"
    assert _cell(describe([27.47]), 2, 1, tex=True) == "$27.47$ ($n = 1$)"
    assert _cell("-", 2, tex=True) == "--" and _cell("not recorded", 2, tex=True) == "not recorded"
