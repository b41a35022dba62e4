"""One writer per output folder: an OS-level lock held for as long as a command writes the folder.

:func:`folder_lock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file inside the folder
(``.lock``) and writes who holds it (pid, command line, start time, host) into that file. A second
writer is refused at once with :class:`FolderLockedError`, naming the folder, the holder and what
to do (wait, or use another ``--run-dir`` / ``--out``). The kernel releases the lock when the
holder's process dies, so a ``kill -9`` never leaves a stale lock: the next command starts at once
and resumes. The lock file stays (deleting it would let two writers lock two different files);
it is hidden and no stage lists or reads it.

``cues extract --shard I/N`` jobs write one folder side by side: each holds its own
``.lock-shard-I-of-N`` exclusively and ``.lock`` shared, so shard jobs run together while an
unsharded extraction into the folder (``.lock`` exclusive) and a second copy of the same shard
are refused.

A folder inside a held folder is held too: before it locks, a writer looks at every folder above
its own, up to the file system root, and is refused while another process holds one of them
(``sharpen segment train --out runs/demo/segment/x`` while ``sharpen run`` writes ``runs/demo``).
It creates no lock file there, and a folder this process holds itself (``sharpen run`` calling a
stage in-process) does not count. A command that writes a single file (``--json``, a PNG) makes
the same check for the file's folder and those above it (:func:`refuse_if_held`) without locking
it, so that two commands writing two files side by side do not refuse each other.

Under ``torchrun`` only rank 0 locks (the ranks of one job write one folder together; ``RANK``).
On a file system without working locks (``flock`` failing with ENOLCK, EOPNOTSUPP, ...), say so
once and go on unlocked. Readers need no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from sharpen_core.errors import UserError

LOCK_NAME = ".lock"
# flock errors meaning "this file system cannot lock", as opposed to "someone holds the lock".
UNSUPPORTED_ERRNOS = frozenset(e for e in (getattr(errno, n, None) for n in (
    "ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL")) if e is not None)
_warned_unsupported: set[str] = set()
_held_fds: set[int] = set()  # lock descriptors this process holds


def _close_in_child() -> None:
    """After a fork: the child (DataLoader worker, CRF process) does not keep the parent's locks, so a
    ``kill -9`` of the writer frees its folder even while orphaned children still run."""
    for fd in list(_held_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _release(fd: int, exclusive: bool) -> None:
    if fd in _held_fds:
        _held_fds.discard(fd)
        if exclusive:  # no stale holder left in the file after a clean end
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor of the lock file releases the lock


class FolderLockedError(UserError):
    """Another process is writing the output folder, or a folder it is in (exit status 2, one line).

    ``path`` is the output folder; ``held`` the folder whose lock another process holds (``path`` itself,
    or one above it)."""

    def __init__(self, folder: str | Path, holders: list[dict[str, Any]], hint: str, what: str = "this folder",
                 held: str | Path | None = None):
        self.path = Path(folder)
        self.held = Path(held) if held is not None else self.path
        self.holders = holders
        who = "; ".join(describe_holder(h) for h in holders) if holders else "details not recorded"
        if held is None:
            problem = f"another process is writing {what} ({who})"
        else:
            problem = f"inside {self.held}, which another process is writing ({who})"
        super().__init__(f"{self.path}: {problem}; wait for it to finish, or use another {hint}")


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 123 on host, `sharpen run ...`, started 2026-01-01 12:00:00 UTC``."""
    parts = [f"pid {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")]
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    return ", ".join(parts)


def holder_info() -> dict[str, Any]:
    """Who this process is, as written into a lock file it holds."""
    argv = list(sys.argv) or [""]
    program = Path(argv[0])
    name = ["python", "-m", program.parent.name] if program.name == "__main__.py" else [program.name]
    return {"pid": os.getpid(), "command": shlex.join([*name, *argv[1:]]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "host": socket.gethostname()}


def shard_lock_name(index: int, count: int) -> str:
    return f"{LOCK_NAME}-shard-{index}-of-{count}"


def _is_rank_zero() -> bool:
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def _read_holder(path: Path, wait: float = 1.0) -> dict[str, Any] | None:
    """The holder recorded in ``path``; waits up to ``wait`` s for a holder that has locked but not yet written."""
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = json.loads(path.read_text())
            if isinstance(holder, dict) and "pid" in holder:
                return holder
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _is_held(path: Path) -> bool:
    """Whether some process holds ``path`` exclusively (probed with a shared non-blocking lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _held_here(path: Path) -> bool:
    """Whether this process holds the lock file ``path`` (one of :data:`_held_fds` is that file)."""
    try:
        st = path.stat()
    except OSError:
        return False
    for fd in list(_held_fds):
        with contextlib.suppress(OSError):
            own = os.fstat(fd)
            if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` exclusively."""
    return path.is_file() and not _held_here(path) and _is_held(path)


def held_above(folder: str | Path) -> tuple[Path, list[dict[str, Any]]] | None:
    """The nearest folder above ``folder`` (a folder or a file; up to the root) that another process writes, with its holders;
    None when there is none. Looks at each folder's ``.lock`` (held exclusively by one writer) and its
    shard locks (cue shard jobs); creates nothing."""
    for parent in Path(os.path.realpath(folder)).parents:  # the real folders: a link does not escape
        lock = parent / LOCK_NAME
        try:
            shards = [p for p in parent.glob(f"{LOCK_NAME}-shard-*") if _held_elsewhere(p)]
        except OSError:  # an unreadable folder on the way up: nothing known to hold it
            shards = []
        if shards:
            return parent, [h for h in (_read_holder(p) for p in sorted(shards)) if h]
        if _held_elsewhere(lock):
            return parent, _holders(parent, lock, True)
    return None


def _refuse_if_held_above(path: Path, hint: str) -> None:
    above = held_above(path)
    if above is not None:
        raise FolderLockedError(path, above[1], hint, held=above[0])


def _holders(folder: Path, path: Path, exclusive: bool) -> list[dict[str, Any]]:
    """Who blocks a lock on ``path``: its recorded holder, or (``.lock`` held shared) the shard jobs."""
    if path.name == LOCK_NAME and exclusive:
        # .lock is held either exclusively by one writer (its info is in it) or shared by shard jobs
        shards = [p for p in sorted(folder.glob(f"{LOCK_NAME}-shard-*")) if _is_held(p)]
        if shards:
            return [h for h in (_read_holder(p) for p in shards) if h]
    holder = _read_holder(path)
    return [holder] if holder else []


def _warn_unsupported(folder: Path, err: OSError) -> None:
    key = str(folder)
    if key in _warned_unsupported:
        return
    _warned_unsupported.add(key)
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    print(f"warning: {folder}: this file system does not support locks ({name}); going on without one, so make "
          "sure no other process writes this folder at the same time", file=sys.stderr)


def _take(folder: Path, name: str, exclusive: bool, hint: str, stack: contextlib.ExitStack,
          what: str = "this folder") -> bool:
    """Lock ``folder/name``; False when the file system cannot lock. Raises FolderLockedError when held."""
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderLockedError(folder, _holders(folder, path, exclusive), hint, what) from None
    except OSError as e:
        os.close(fd)
        if e.errno in UNSUPPORTED_ERRNOS:
            _warn_unsupported(folder, e)
            return False
        raise
    _held_fds.add(fd)
    stack.callback(_release, fd, exclusive)
    if exclusive:
        payload = (json.dumps(holder_info()) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
    return True


def refuse_if_held(folder: str | Path, hint: str = "--out") -> None:
    """Raise :class:`FolderLockedError` when another process holds the lock of ``folder`` or of a folder
    above it; creates nothing.

    A cheap early check, so that a second command is refused before its slow start-up work (imports,
    config checks); :func:`folder_lock` takes the lock afterwards. For a command that writes one file,
    the check of the file's folder (:func:`refuse_file_if_held`).
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    if not _is_rank_zero():
        return
    if _held_elsewhere(path):
        raise FolderLockedError(folder, _holders(folder, path, True), hint)
    _refuse_if_held_above(folder, hint)


def refuse_file_if_held(path: str | Path, hint: str) -> None:
    """Refuse to write the file ``path`` while another process writes its folder or one above it
    (:class:`FolderLockedError` naming the file); creates nothing."""
    if _is_rank_zero():
        _refuse_if_held_above(Path(path), hint)  # the folders above a file: its own, then theirs


@contextlib.contextmanager
def folder_lock(folder: str | Path, hint: str = "--out", shard: tuple[int, int] | None = None) -> Iterator[bool]:
    """Hold the writer's lock of ``folder`` (created if missing) for the ``with`` block.

    ``hint`` names the option that picks another folder (``--out``, ``--run-dir``); ``shard``
    ``(I, N)`` with N > 1 locks that shard only. Yields whether a lock is held (False on a file
    system without locks, and on torchrun ranks other than 0). Raises :class:`FolderLockedError`
    at once when another process writes the folder (or that shard), or a folder above it.
    """
    folder = Path(folder)
    if not _is_rank_zero():
        yield False
        return
    _refuse_if_held_above(folder, hint)  # before anything is made: a folder inside a held one is held
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if shard is not None and shard[1] > 1:
            held = _take(folder, LOCK_NAME, False, hint, stack)
            held = held and _take(folder, shard_lock_name(*shard), True, hint, stack,
                                  what=f"shard {shard[0]}/{shard[1]} of this folder")
        else:
            held = _take(folder, LOCK_NAME, True, hint, stack)
        yield held
