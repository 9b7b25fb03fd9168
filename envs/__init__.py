"""Meta-RL task families: Gymnasium environments with a task parameter.

Depends only on NumPy, Gymnasium, MuJoCo (optional, for the locomotion families) and the
standard library (never torch or ``metarl``). Families are listed in :data:`FAMILIES` and
built with :func:`make_family`; single envs are also registered with Gymnasium under the
``metarl/`` namespace (the locomotion ones with an ``Oracle`` variant that observes the task).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.adapter import GymParamsEnv, GymParamsFamily
from envs.base import BatchedTaskEnv, EnvListBatch, Task, TaskFamily
from envs.locomotion import (
    DEFAULT_HORIZON,
    LOCOMOTION_FAMILIES,
    AntDir,
    AntGoal,
    AntVel,
    HalfCheetahDir,
    HalfCheetahVel,
    LocomotionFamily,
    MissingDependencyError,
    headless_rendering_default,
)
from envs.navigation import Navigation2D, Navigation2DBatch, Navigation2DEnv

headless_rendering_default()  # before anything imports MuJoCo: it picks its rendering back-end then

__all__ = [
    "FAMILIES",
    "AntDir",
    "AntGoal",
    "AntVel",
    "BatchedTaskEnv",
    "EnvListBatch",
    "GymParamsEnv",
    "GymParamsFamily",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "LocomotionFamily",
    "MissingDependencyError",
    "Navigation2D",
    "Navigation2DBatch",
    "Navigation2DEnv",
    "Task",
    "TaskFamily",
    "make_family",
]

FAMILIES: dict[str, type[TaskFamily]] = {
    family.name: family for family in (Navigation2D, *LOCOMOTION_FAMILIES, GymParamsFamily)
}


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build the task family registered as ``name`` with constructor ``kwargs``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](**kwargs)


# Checked first so that importing twice (or reloading) does not re-register.
for _env_id, _kwargs in (("metarl/Navigation2D-v0", {}), ("metarl/Navigation2DOracle-v0", {"oracle": True})):
    if _env_id not in gym.envs.registry:
        gym.register(id=_env_id, entry_point="envs.navigation:Navigation2DEnv", max_episode_steps=100, kwargs=_kwargs)

# Entry points are resolved by gym.make only, so registering needs no MuJoCo.
for _family in LOCOMOTION_FAMILIES:
    for _oracle, _env_id in ((False, _family.env_id), (True, _family.oracle_env_id())):
        if _env_id not in gym.envs.registry:
            gym.register(
                id=_env_id,
                entry_point="envs.locomotion:make_registered_env",
                max_episode_steps=DEFAULT_HORIZON,
                kwargs={"family": _family.name, "oracle": _oracle},
            )
