"""An exclusive lock on a run directory, held for the life of the run (``train`` and ``--resume``).

The lock is the OS's advisory file lock (``flock``) on ``run.lock`` in the directory: the kernel
releases it when the holder exits, however it exits (even SIGKILL), so a stale lock never blocks a
resume. The file records who holds it, for the message a second run gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

LOCK_FILE = "run.lock"


class RunDirectoryInUse(RuntimeError):
    """Another process holds the run directory's lock."""


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds the lock of ``run_dir`` now, or None if nobody does."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)


@contextmanager
def locked_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (an existing directory) for the block; raise
    :class:`RunDirectoryInUse` naming the holder if another process has it."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryInUse(
                f"run directory {str(run_dir)!r} is in use by {_holder(fd)}; wait for that run to end, or choose "
                "another run.dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock
