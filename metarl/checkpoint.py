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
from pathlib import Path
from typing import Any

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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: str | Path) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that can be read, as (iteration, state); ``None`` if there is none.

    A damaged newest file (for example from a disk error) is skipped in favour of the one before.
    """
    for iteration, path in reversed(list_checkpoints(run_dir)):
        try:
            return iteration, torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch raises many kinds for a damaged file
            continue
    return None
