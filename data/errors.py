"""The one error type of the data layer: every message names the file and what was expected."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset folder, list, image or mask is missing or malformed.

    ``path`` is the offending file or folder; the message always names it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
