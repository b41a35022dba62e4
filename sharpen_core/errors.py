"""The user-facing error types: the floor every layer raises through.

:class:`UserError` is the one root of the errors a user can fix (bad data, bad config, bad
command-line arguments, a locked folder, a bad checkpoint, a full disk). The command line catches
it and prints its one-line message with exit status 2; any other exception is a bug and shows its
traceback (exit 1). A check of the user's input raises a subclass below; a check of the code's own
invariants (array shapes between two functions, ...) stays a plain ``ValueError``/``TypeError``,
so that a bug never reads as the user's fault.

The subclasses that replace a former ``ValueError`` also subclass ``ValueError``, so code that
catches ``ValueError`` around such a check keeps working.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user can fix; its message is one line that says what is wrong and what was expected."""


class UsageError(UserError, ValueError):
    """A command-line argument, or a combination of them, that the command cannot use (``--shard 3/2``,
    an unknown mechanism, ``--out`` with several ``--maps``)."""


class ConfigError(UserError, ValueError):
    """A configuration file, key or value is malformed; the message names the key and its source."""


class DatasetError(UserError, ValueError):
    """A dataset folder, list, image or mask (or any input file or output folder) is missing or malformed.

    ``path`` is the offending file or folder; the message always names it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CheckpointMismatch(UserError, ValueError):
    """A file that is not the checkpoint expected: missing, not a PyTorch checkpoint of this project, or
    made for another architecture, model, variant, class count or config."""


class DiskFullError(UserError, OSError):
    """The disk filled up during a stage; finished work is kept and a rerun resumes."""


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of an error's text, at most ``limit`` characters: for quoting a library's
    (often many-line) message inside a one-line :class:`UserError`."""
    text = str(error)
    line = next((s.strip() for s in text.splitlines() if s.strip()), type(error).__name__
                if isinstance(error, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
