"""A task family whose environment fails on purpose, for the tests of the sampling workers.

It is 2D navigation, except that a batched env holding a task marked ``{"faulty": True}`` raises,
kills its own process or hangs at step ``at_step``. Workers build it from
``functools.partial(make_parts, ...)`` (it travels to them by pickling, as a config's recipe does).
The fault never fires in the process ``safe_pid`` (the test process, whose in-process sampler
computes the reference episodes), and with ``once_file`` only while that file exists: the first
worker to fail removes it, so the fault is transient and a restarted worker succeeds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import envs
from envs import BatchedTaskEnv, Task, TaskFamily
from metarl.rl.policies import GaussianMLPPolicy

FAULTS = ("none", "raise", "crash", "hang")


class FaultyBatch:
    """A navigation batch that misbehaves at step ``at_step`` (see the module docstring)."""

    def __init__(self, inner: BatchedTaskEnv, armed: bool, fault: str, at_step: int, once_file: str | None) -> None:
        self.inner, self.armed, self.fault, self.at_step, self.once_file = inner, armed, fault, at_step, once_file
        self.num_envs, self.horizon = inner.num_envs, inner.horizon
        self.observation_space, self.action_space = inner.observation_space, inner.action_space
        self.steps = 0

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        self.steps = 0
        return self.inner.reset(seeds)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.steps += 1
        if self.armed and self.steps == self.at_step and self._claim():
            if self.fault == "raise":
                raise RuntimeError("the faulty env failed on purpose")
            if self.fault == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fault == "hang":
                time.sleep(3600)
        return self.inner.step(actions)

    def _claim(self) -> bool:
        if self.once_file is None:
            return True
        try:
            os.remove(self.once_file)
            return True
        except FileNotFoundError:
            return False


class FaultyFamily(TaskFamily):
    """2D navigation whose batched env fails for tasks marked faulty (see the module docstring)."""

    name = "faulty_navigation"

    def __init__(self, fault: str = "none", at_step: int = 2, once_file: str | None = None,
                 safe_pid: int | None = None, horizon: int = 10) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault = {fault!r}; allowed: {', '.join(FAULTS)}")
        self.inner = envs.make_family("navigation2d", horizon=horizon)
        self.horizon = horizon
        self.fault, self.at_step, self.once_file, self.safe_pid = fault, at_step, once_file, safe_pid

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return self.inner.sample_tasks(n, rng)

    def make_env(self, task: Task | None = None, **kwargs: Any) -> Any:
        return self.inner.make_env(None if task is None else {"goal": task["goal"]}, **kwargs)

    def make_batched(self, tasks: Sequence[Task]) -> FaultyBatch:
        armed = self.fault != "none" and os.getpid() != self.safe_pid and any(t.get("faulty") for t in tasks)
        inner = self.inner.make_batched([{"goal": task["goal"]} for task in tasks])
        return FaultyBatch(inner, armed, self.fault, self.at_step, self.once_file)


def make_parts(fault: str = "none", at_step: int = 2, once_file: str | None = None, safe_pid: int | None = None,
               horizon: int = 10) -> tuple[FaultyFamily, GaussianMLPPolicy]:
    """The family and a small Gaussian policy fitting its spaces (what a worker builds)."""
    family = FaultyFamily(fault, at_step, once_file, safe_pid, horizon)
    env = family.make_env()
    return family, GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (16,))
