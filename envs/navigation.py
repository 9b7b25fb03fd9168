"""2D point navigation task family (Finn et al. 2017; as in rllab / pytorch-maml-rl).

* Task distribution: ``{"goal": g}`` with ``g ~ U[goal_low, goal_high]^2``
  (default ``U[-0.5, 0.5]^2``).
* State / observation: the agent's 2D position (float32), at the origin ``(0, 0)``
  at the start of every episode; with ``oracle=True`` the goal follows it (4 numbers).
* Actions: the action space is ``[-1, 1]^2``; the agent moves by
  ``0.1 * clip(action, -1, 1)``, so each coordinate of a step is at most 0.1. This is the
  environment behind the published numbers: the authors' code wraps a point env with actions
  in ``[-0.1, 0.1]`` in rllab's ``normalize``, which rescales ``[-1, 1]`` to those bounds and
  clips. pytorch-maml-rl and garage instead give the policy the raw ``[-0.1, 0.1]`` space, where
  an initial policy std of 1.0 is ten times the largest move and almost every action is clipped.
* Reward: ``-||position - goal||_2``, computed after the move.
* Termination: when ``|dx| < 0.01`` and ``|dy| < 0.01`` (``d = position - goal``);
  truncation after ``horizon`` steps (default 100).
* Setting a task: ``env.unwrapped.set_task({"goal": g})`` (takes effect immediately,
  keep the current position) or ``env.reset(options={"task": {"goal": g}})``.

:class:`Navigation2DEnv` and :class:`Navigation2DBatch` use the same float64
arithmetic, so a batch of copies agrees bit for bit with single envs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import BatchedTaskEnv, Task, TaskFamily, _check_horizon

MAX_STEP = 0.1  # largest move per coordinate, reached at action +/-1
GOAL_TOLERANCE = 0.01
DEFAULT_GOAL = (0.0, 0.0)  # as in pytorch-maml-rl when no task is given


def _goal_from_task(task: Task) -> np.ndarray:
    if not isinstance(task, dict) or "goal" not in task:
        raise ValueError(f"task must be a dict with key 'goal', got {task!r}")
    goal = np.array(task["goal"], dtype=np.float64)
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"task['goal'] must be 2 finite numbers, got {task['goal']!r}")
    return goal


def _observation_space(oracle: bool = False) -> gym.spaces.Box:
    return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(4 if oracle else 2,), dtype=np.float32)


def _check_oracle(oracle: Any) -> bool:
    if not isinstance(oracle, bool):
        raise ValueError(f"oracle must be true or false, got {oracle!r}")
    return oracle


def _action_space() -> gym.spaces.Box:
    return gym.spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)


def displacement(action: np.ndarray) -> np.ndarray:
    """The move an action makes: 0.1 times the action clipped to [-1, 1]."""
    return MAX_STEP * np.clip(action, -1.0, 1.0)


class Navigation2DEnv(gym.Env[np.ndarray, np.ndarray]):
    """Single 2D navigation env with a goal task parameter.

    :param task: ``{"goal": array of shape (2,)}``; goal ``(0, 0)`` when ``None``.
    :param horizon: steps before the episode is truncated.
    :param render_mode: ``None`` or ``"rgb_array"``: :meth:`render` draws the square
        ``[-RENDER_EXTENT, RENDER_EXTENT]^2`` with the goal (red), the path so far (grey) and the agent (blue).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}

    def __init__(self, task: Task | None = None, horizon: int = 100, oracle: bool = False,
                 render_mode: str | None = None) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        _check_horizon(horizon)
        self.horizon = int(horizon)
        self.oracle = _check_oracle(oracle)
        self.observation_space = _observation_space(self.oracle)
        self.action_space = _action_space()
        self._goal = np.array(DEFAULT_GOAL, dtype=np.float64) if task is None else _goal_from_task(task)
        self._position = np.zeros(2, dtype=np.float64)
        self._path = [self._position.copy()]
        self._steps = 0
        self._needs_reset = True

    def set_task(self, task: Task) -> None:
        """Set the goal; takes effect immediately."""
        self._goal = _goal_from_task(task)

    def get_task(self) -> Task:
        """Return the current task (a copy)."""
        return {"goal": self._goal.copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Return to the origin; ``options={"task": task}`` sets the task first. The seed is unused (no reset noise)."""
        super().reset(seed=seed)
        if options is not None and "task" in options:
            self.set_task(options["task"])
        self._position = np.zeros(2, dtype=np.float64)
        self._path = [self._position.copy()]
        self._steps = 0
        self._needs_reset = False
        return self._observe(), {"goal": self._goal.copy()}

    def _observe(self) -> np.ndarray:
        if self.oracle:
            return np.concatenate([self._position, self._goal]).astype(np.float32)
        return self._position.astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by 0.1 times the clipped action; reward is minus the distance to the goal after the move."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {action.shape}")
        self._position = self._position + displacement(action)
        self._path.append(self._position.copy())
        d = self._position - self._goal
        # Explicit sqrt of the sum (not np.linalg.norm) so the batched version matches bit for bit.
        reward = -np.sqrt(d[0] * d[0] + d[1] * d[1])
        terminated = bool(np.abs(d[0]) < GOAL_TOLERANCE and np.abs(d[1]) < GOAL_TOLERANCE)
        self._steps += 1
        truncated = self._steps >= self.horizon
        return self._observe(), float(reward), terminated, truncated, {"goal": self._goal.copy()}


    def render(self) -> np.ndarray | None:
        """A ``RENDER_SIZE`` x ``RENDER_SIZE`` RGB image (``render_mode="rgb_array"``), else None."""
        if self.render_mode is None:
            return None
        image = np.full((RENDER_SIZE, RENDER_SIZE, 3), 255, dtype=np.uint8)
        image[RENDER_SIZE // 2, :] = image[:, RENDER_SIZE // 2] = 225  # the axes through the origin
        _disk(image, self._goal, 7, (214, 39, 40))
        for point in self._path[:-1]:
            _disk(image, point, 2, (150, 150, 150))
        _disk(image, self._position, 5, (31, 119, 180))
        return image


RENDER_SIZE = 256
RENDER_EXTENT = 0.6  # half the side of the square drawn; goals lie in [-0.5, 0.5]^2


def _disk(image: np.ndarray, point: np.ndarray, radius: int, color: tuple[int, int, int]) -> None:
    """Paint a disk of ``radius`` pixels at ``point`` (world coordinates; y up); off-image parts are dropped."""
    size = image.shape[0]
    column = (point[0] + RENDER_EXTENT) / (2 * RENDER_EXTENT) * (size - 1)
    row = (RENDER_EXTENT - point[1]) / (2 * RENDER_EXTENT) * (size - 1)
    rows, columns = np.ogrid[:size, :size]
    image[(rows - row) ** 2 + (columns - column) ** 2 <= radius**2] = color


class Navigation2DBatch:
    """Vectorised :class:`~envs.base.BatchedTaskEnv` for many navigation copies.

    :param goals: one goal per copy, shape (n, 2).
    :param horizon: steps before a copy is truncated.
    :param oracle: append each copy's goal to its observation.
    """

    def __init__(self, goals: np.ndarray, horizon: int = 100, oracle: bool = False) -> None:
        _check_horizon(horizon)
        self.oracle = _check_oracle(oracle)
        goals = np.array(goals, dtype=np.float64)
        if goals.ndim != 2 or goals.shape[0] < 1 or goals.shape[1] != 2 or not np.all(np.isfinite(goals)):
            raise ValueError(f"goals must be a finite array of shape (n, 2) with n >= 1, got shape {goals.shape}")
        self.goals = goals
        self.num_envs = goals.shape[0]
        self.horizon = int(horizon)
        self.observation_space = _observation_space(self.oracle)
        self.action_space = _action_space()
        self._position = np.zeros((self.num_envs, 2), dtype=np.float64)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        """Put every copy at the origin; ``seeds`` is ignored (no reset noise). Returns (n, 2) float32."""
        self._position = np.zeros((self.num_envs, 2), dtype=np.float64)
        self._steps[:] = 0
        self._terminated[:] = False
        self._truncated[:] = False
        self._needs_reset = False
        return self._observe()

    def _observe(self) -> np.ndarray:
        if self.oracle:
            return np.concatenate([self._position, self.goals], axis=1).astype(np.float32)
        return self._position.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the live copies with actions of shape (n, 2); done copies are frozen with reward 0.0."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape ({self.num_envs}, 2), got {actions.shape}")
        alive = ~(self._terminated | self._truncated)
        moved = self._position + displacement(actions)
        self._position = np.where(alive[:, None], moved, self._position)
        d = self._position - self.goals
        reward = -np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
        reached = (np.abs(d[:, 0]) < GOAL_TOLERANCE) & (np.abs(d[:, 1]) < GOAL_TOLERANCE)
        self._steps += alive
        self._terminated = np.where(alive, reached, self._terminated)
        self._truncated = np.where(alive, self._steps >= self.horizon, self._truncated)
        return (
            self._observe(),
            np.where(alive, reward, 0.0),
            self._terminated.copy(),
            self._truncated.copy(),
        )


class Navigation2D(TaskFamily):
    """The 2D navigation task family: goals drawn uniformly from a square.

    :param horizon: steps per episode.
    :param goal_low: lower bound of each goal coordinate.
    :param goal_high: upper bound of each goal coordinate (must exceed ``goal_low``).
    :param oracle: append the goal to every observation (the oracle baseline of Finn et al.).
    """

    name = "navigation2d"

    def __init__(self, horizon: int = 100, goal_low: float = -0.5, goal_high: float = 0.5,
                 oracle: bool = False) -> None:
        _check_horizon(horizon)
        self.oracle = _check_oracle(oracle)
        for arg, value in (("goal_low", goal_low), ("goal_high", goal_high)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ValueError(f"{arg} must be a finite number, got {value!r}")
        if not goal_low < goal_high:
            raise ValueError(f"goal_low must be < goal_high, got goal_low={goal_low!r}, goal_high={goal_high!r}")
        self.horizon = int(horizon)
        self.goal_low = float(goal_low)
        self.goal_high = float(goal_high)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` goals ``~ U[goal_low, goal_high]^2`` from ``rng`` only."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        goals = rng.uniform(self.goal_low, self.goal_high, size=(int(n), 2))
        return [{"goal": goal.copy()} for goal in goals]

    task_sets = ("finn2017",)

    def task_set(self, name: str) -> list[Task]:
        """``"finn2017"``: the 40 test goals of Finn et al.'s navigation results
        (``maml_examples/test_maml_point.py``: ``np.random.seed(1)``, then 40 x 2 uniform draws on
        [-0.5, 0.5]), on which their published returns were measured."""
        if name != "finn2017":
            return super().task_set(name)
        goals = np.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2))
        return [{"goal": goal.copy()} for goal in goals]

    def make_env(self, task: Task | None = None, **kwargs: Any) -> Navigation2DEnv:
        """Build a :class:`Navigation2DEnv` (``kwargs`` go to its constructor; horizon defaults to the family's)."""
        kwargs.setdefault("horizon", self.horizon)
        kwargs.setdefault("oracle", self.oracle)
        return Navigation2DEnv(task=task, **kwargs)

    def make_batched(self, tasks: Sequence[Task]) -> BatchedTaskEnv:
        """Build a :class:`Navigation2DBatch` with one copy per task."""
        if len(tasks) == 0:
            raise ValueError("tasks must contain at least one task, got an empty sequence")
        return Navigation2DBatch(np.stack([_goal_from_task(t) for t in tasks]), horizon=self.horizon,
                                 oracle=self.oracle)
