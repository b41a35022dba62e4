"""Small number helpers shared by the report, the claims and the leaderboard."""

from __future__ import annotations

import math
from typing import Any


def finite_number(v: Any) -> float | None:
    """``v`` as a float when it is a finite int or float (not a bool), else None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    return float(v) if ok else None


def hms(seconds: float) -> str:
    """``seconds`` as ``h:mm:ss`` (rounded to the second)."""
    s = int(round(float(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def is_number(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not a bool)."""
    return finite_number(v) is not None
