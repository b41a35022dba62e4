"""The number helpers of the report, the claims and the leaderboard: the floor's (:mod:`sharpen_core.numbers`)."""

from __future__ import annotations

from sharpen_core.numbers import finite_number, hms

__all__ = ["finite_number", "hms"]
