"""The floor's number helpers (sharpen_core/numbers.py), shared by the plots and the report."""

from __future__ import annotations

import math

import numpy as np

from pipeline import numbers as report_numbers
from sharpen_core import plots
from sharpen_core.numbers import finite, finite_number, hms


def test_finite_numbers_only():
    assert [finite_number(v) for v in (3, 0.25, np.float64(0.5), True, None, "1", math.nan, -math.inf)] == [
        3.0, 0.25, 0.5, None, None, None, None, None]
    assert [finite(v) for v in (0, -2.5, False, math.inf, [1])] == [True, True, False, False, False]


def test_hms_rounds_to_the_second():
    assert [hms(s) for s in (0, 59.5, 3599.4, 3723, 90061)] == ["0:00:00", "0:01:00", "0:59:59", "1:02:03",
                                                                 "25:01:01"]


def test_one_copy():
    assert plots.finite is finite and report_numbers.finite_number is finite_number and report_numbers.hms is hms
