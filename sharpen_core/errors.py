"""The user-facing error types: the floor every layer raises through.

:class:`UserError` is the one root of the errors a user can fix (bad data, bad config, a locked
folder, a bad checkpoint, a full disk). The command line catches it and prints its one-line message
with exit status 2; any other exception is a bug and shows its traceback (exit 1).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user can fix; its message is one line that says what is wrong and what was expected."""


class DatasetError(UserError, ValueError):
    """A dataset folder, list, image or mask (or any input file) is missing or malformed.

    ``path`` is the offending file or folder; the message always names it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DiskFullError(UserError, OSError):
    """The disk filled up during a stage; finished work is kept and a rerun resumes."""
