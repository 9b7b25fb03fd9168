"""Task-family interfaces shared by every environment in ``envs``.

A *task* is a plain dict of parameters (for example ``{"goal": np.array([x, y])}``).
A :class:`TaskFamily` samples tasks and builds environments set to them, either one
Gymnasium env at a time or as a :class:`BatchedTaskEnv` that steps many
(task, episode) copies at once with NumPy arrays.

This package depends only on NumPy, Gymnasium and the standard library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

Task = dict[str, Any]


@runtime_checkable
class BatchedTaskEnv(Protocol):
    """Many (task, episode) copies stepped together with NumPy arrays.

    ``observation_space`` and ``action_space`` describe ONE copy. Once a copy has
    terminated or been truncated (taken ``horizon`` steps), later steps leave it
    unchanged and return reward ``0.0`` and the same flags; the caller masks them out.
    """

    num_envs: int
    observation_space: gym.Space
    action_space: gym.Space
    horizon: int

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        """Start a new episode in every copy.

        :param seeds: int array of shape (num_envs,), each copy's reset seed
            (deterministic envs ignore it).
        :return: observations, shape (num_envs, obs_dim).
        """
        ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every copy that is still alive.

        :param actions: shape (num_envs, act_dim), or int array (num_envs,) for discrete spaces.
        :return: ``(obs, reward, terminated, truncated)`` of shapes
            (n, obs_dim), (n,), (n,) bool, (n,) bool.
        """
        ...


class EnvListBatch:
    """Generic :class:`BatchedTaskEnv` over a list of single Gymnasium envs.

    :param envs: one env per copy, each already set to its task.
    :param horizon: maximum steps per episode; truncation is enforced here as well as
        honouring each env's own ``truncated`` flag.
    """

    def __init__(self, envs: Sequence[gym.Env], horizon: int) -> None:
        if len(envs) == 0:
            raise ValueError("envs must contain at least one env, got an empty sequence")
        _check_horizon(horizon)
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.horizon = int(horizon)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self._obs: np.ndarray | None = None
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        """Reset every copy (``env.reset(seed=int(seed))``); return (num_envs, obs_dim) observations."""
        if seeds is not None:
            seeds = np.asarray(seeds)
            if seeds.shape != (self.num_envs,):
                raise ValueError(f"seeds must have shape ({self.num_envs},), got {seeds.shape}")
        obs = []
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=None if seeds is None else int(seeds[i]))
            obs.append(np.asarray(o))
        self._obs = np.stack(obs)
        self._terminated[:] = False
        self._truncated[:] = False
        self._steps[:] = 0
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the copies still alive; done copies keep their observation, get reward 0.0 and keep their flags."""
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have leading dimension {self.num_envs}, got shape {actions.shape}")
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        for i, env in enumerate(self.envs):
            if self._terminated[i] or self._truncated[i]:
                continue
            action = int(actions[i]) if discrete else actions[i]
            o, r, term, trunc, _ = env.step(action)
            self._steps[i] += 1
            self._obs[i] = np.asarray(o)
            rewards[i] = float(r)
            self._terminated[i] = bool(term)
            self._truncated[i] = bool(trunc) or self._steps[i] >= self.horizon
        return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy()

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


class TaskFamily(ABC):
    """A distribution over tasks plus constructors for environments set to a task.

    Subclasses set ``name`` (registry key) and ``horizon`` (steps per episode), and
    override :meth:`make_batched` when their dynamics vectorise.
    """

    name: str
    horizon: int

    @abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks using only ``rng`` (same generator state, same tasks)."""

    @abstractmethod
    def make_env(self, task: Task | None = None, **kwargs: Any) -> gym.Env:
        """Build a single env set to ``task`` (a family default when ``None``)."""

    task_sets: tuple[str, ...] = ()  # names :meth:`task_set` knows
    # Most copies a batched env should step at once (None: no limit); a sampler rolls out more in chunks.
    preferred_batch_size: int | None = None

    def task_set(self, name: str) -> list[Task]:
        """A fixed, named list of tasks (for example the test tasks of a paper); the family's names
        are in ``task_sets``."""
        known = ", ".join(self.task_sets) or "none"
        raise ValueError(f"task family {self.name!r} has no task set {name!r} (its task sets: {known})")

    def make_batched(self, tasks: Sequence[Task]) -> BatchedTaskEnv:
        """Build a batched env with one copy per task (default: :class:`EnvListBatch` over :meth:`make_env`)."""
        return EnvListBatch([self.make_env(task) for task in tasks], horizon=self.horizon)


def _check_horizon(horizon: int) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
