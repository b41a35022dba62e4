"""Small number helpers shared by the plots, the report, the claims and the leaderboard."""

from __future__ import annotations

import math
from typing import Any


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (a bool, None, NaN, ±inf or a string is not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def finite_number(v: Any) -> float | None:
    """``v`` as a float when it is :func:`finite`, else None."""
    return float(v) if finite(v) else None


def hms(seconds: float) -> str:
    """``seconds`` as ``h:mm:ss`` (rounded to the second)."""
    s = int(round(float(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
