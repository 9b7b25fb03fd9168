"""Checkpoints of a training run: written atomically, the last K kept, the newest readable one loaded.

A checkpoint is a ``torch.save`` of a plain dict (the trainer's state: parameters, outer
optimiser state, iteration and env-step counters, RNG states, and anything the caller adds).
It is written to a temporary file, flushed to disk, then renamed into place, so a crash while
writing (even SIGKILL) leaves the previous checkpoints intact and never a half-written file
under a checkpoint's name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"checkpoint-{iteration:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint of the run, oldest first (temporary files ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def _all_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def atomic_save(value: Any, path: str | Path) -> Path:
    """``torch.save(value)`` to ``path`` through a temporary file, flushed, then renamed into place.

    A failure (disk full, ...) removes the temporary file and raises ``OSError`` naming ``path``.
    """
    return _atomic_write(path, lambda file: torch.save(value, file))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """``text`` (UTF-8) to ``path`` as :func:`atomic_save` writes: a cut write never leaves half a file."""
    return _atomic_write(path, lambda file: file.write(text.encode()))


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch's writer reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise OSError(getattr(error, "errno", None), f"could not write {path} ({reason})") from None
    return path


def save_checkpoint(run_dir: str | Path, iteration: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``iteration`` (completed iterations) and keep the newest ``keep``.

    Raises ``ValueError`` if ``state["params"]`` holds NaN or Inf: a checkpoint is never written
    from a non-finite state.
    """
    if keep < 1:
        raise ValueError(f"keep = {keep}: at least one checkpoint must be kept")
    if not _all_finite(state.get("params", {})):
        raise ValueError(f"iteration {iteration}: the parameters hold NaN or Inf; no checkpoint written")
    path = checkpoint_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, path)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class LoadedCheckpoint(NamedTuple):
    """The checkpoint a run continues from, and the newer ones that could not be used (path, why)."""

    iteration: int
    state: dict[str, Any]
    path: Path
    damaged: list[tuple[Path, str]]


def _problem(state: Any, required: tuple[str, ...]) -> str | None:
    """Why ``state`` is not a usable checkpoint, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint's dict"
    missing = [key for key in required if key not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    params = state.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, torch.Tensor) for v in params.values()):
        return "its params are not a dict of tensors"
    if not _all_finite(params):
        return "its parameters hold NaN or Inf"
    return None


def load_latest_checkpoint(run_dir: str | Path, required: tuple[str, ...] = ()) -> LoadedCheckpoint | None:
    """The newest usable checkpoint (readable, a dict with the ``required`` keys, finite parameters);
    ``None`` if the run has no checkpoint file at all.

    Damaged newer files (a disk error, an edit) are skipped in favour of older ones and listed in
    ``damaged``; ``ValueError`` naming every file and its problem when none is usable.
    """
    damaged: list[tuple[Path, str]] = []
    found = list_checkpoints(run_dir)
    for iteration, path in reversed(found):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for a damaged file
            damaged.append((path, f"unreadable: {str(error).splitlines()[0] if str(error) else type(error).__name__}"))
            continue
        problem = _problem(state, required)
        if problem is None:
            return LoadedCheckpoint(iteration, state, path, damaged)
        damaged.append((path, problem))
    if found:
        details = "; ".join(f"{path.name}: {why}" for path, why in damaged)
        raise ValueError(f"{str(run_dir)!r} holds {len(found)} checkpoint(s) and none is usable ({details})")
    return None
