"""Meta-RL task families: Gymnasium environments with a task parameter.

Depends only on NumPy, Gymnasium and the standard library (never torch or ``metarl``).
Families are listed in :data:`FAMILIES` and built with :func:`make_family`; single envs
are also registered with Gymnasium under the ``metarl/`` namespace.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.base import BatchedTaskEnv, EnvListBatch, Task, TaskFamily
from envs.navigation import Navigation2D, Navigation2DBatch, Navigation2DEnv

__all__ = [
    "FAMILIES",
    "BatchedTaskEnv",
    "EnvListBatch",
    "Navigation2D",
    "Navigation2DBatch",
    "Navigation2DEnv",
    "Task",
    "TaskFamily",
    "make_family",
]

FAMILIES: dict[str, type[TaskFamily]] = {
    Navigation2D.name: Navigation2D,
}


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build the task family registered as ``name`` with constructor ``kwargs``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](**kwargs)


# Checked first so that importing twice (or reloading) does not re-register.
if "metarl/Navigation2D-v0" not in gym.envs.registry:
    gym.register(
        id="metarl/Navigation2D-v0",
        entry_point="envs.navigation:Navigation2DEnv",
        max_episode_steps=100,
    )
