"""The number helpers of the report, the claims and the leaderboard: the floor's (:mod:`sharpen_core.numbers`)."""

from __future__ import annotations

from typing import Any

from sharpen_core.numbers import finite_number, hms

__all__ = ["finite_number", "hms", "is_number"]


def is_number(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not a bool)."""
    return finite_number(v) is not None
