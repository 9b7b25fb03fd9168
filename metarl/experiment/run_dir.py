"""A run directory: where a run's files go, the parameter file, and the directory's lock.

A run is written only into a new or empty directory. Its exclusive lock is held for the life of the
run (``train`` and ``--resume``): the OS's advisory file lock (``flock``) on ``run.lock`` in the
directory, which the kernel releases when the holder exits, however it exits (even SIGKILL), so a
stale lock never blocks a resume. The file records who holds it, for the message a second run gets.
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
from typing import TYPE_CHECKING

import torch

from metarl.experiment.checkpoint import atomic_save
from metarl.params import Params

if TYPE_CHECKING:
    from metarl.experiment.config import Config

LOCK_FILE = "run.lock"
PARAMS_FILE = "params.pt"


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


def check_new_run_dir(run_dir: Path) -> None:
    """``run.dir`` must be new or empty (but for the lock): metarl never writes into other files."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise FileExistsError(f"run.dir {str(run_dir)!r} exists and is not a directory")
    if (run_dir / "config.yaml").exists():
        holder = lock_holder(run_dir)
        raise FileExistsError(f"run directory {str(run_dir)!r} already holds a run" +
                              (f", in use by {holder}" if holder else "") + "; choose another run.dir, or "
                              f"continue it with: metarl train --resume {run_dir}")
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    if others:
        raise FileExistsError(f"run.dir {str(run_dir)!r} exists and is not empty ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); a run is written only into a new or empty "
                              "directory")


def create_run_dir(config: Config) -> Path:
    """A new run directory: ``run.dir`` if given (it may exist but must be empty), else a fresh
    ``runs/<name>-<time>`` (suffixed ``-2``, ``-3``, ... when runs start in the same second)."""
    if config.run.dir:
        run_dir = Path(config.run.dir)
        check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = Path("runs") / f"{config.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        run_dir = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            run_dir.mkdir()  # atomic: two runs never get the same directory
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a run directory next to {str(base)!r}")


def save_params(params: Params, path: str | Path) -> None:
    """Write parameters atomically (a temporary file, then a rename)."""
    atomic_save({k: v.detach().cpu() for k, v in params.items()}, path)


def load_params(path: str | Path) -> Params:
    """Parameters written by :func:`save_params`; ``ValueError`` naming the file if it is damaged or not a
    parameter file."""
    try:
        params = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise ValueError(f"{str(path)!r} is not a readable parameter file: {error}") from None
    if not isinstance(params, dict) or not all(isinstance(v, torch.Tensor) for v in params.values()):
        raise ValueError(f"{str(path)!r} does not hold a dict of tensors")
    return params
