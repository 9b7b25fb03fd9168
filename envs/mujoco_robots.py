"""The MuJoCo side of the locomotion families' ``"v5"`` robots: single Gymnasium envs and batched stepping.

The default ``"rllab"`` robots (the environments Finn et al. ran) are in :mod:`envs.rllab_robots`; this
module also holds what both share (MuJoCo's warnings, the spaces).

* The single envs (:class:`HalfCheetahVelEnv`, ..., :class:`AntGoalEnv`) subclass Gymnasium's
  v5 ``HalfCheetahEnv`` / ``AntEnv``: same model, simulation (``do_simulation``) and reset
  noise; the observation is Gymnasium's, plus the task vector for oracle envs; the reward,
  termination and truncation are the family's (see :mod:`envs.locomotion`). Set the task
  with ``env.unwrapped.set_task(task)`` or ``env.reset(options={"task": task})``.
* :class:`MujocoBatch` steps many (task, episode) copies: one ``MjData`` per copy on one
  shared ``MjModel``, ``mj_step`` called directly, then observations, rewards and flags
  computed for all copies at once with the same functions as the single envs. It skips
  Gymnasium's per-step wrappers, checks, info dicts and per-env model compilation (about
  10 ms per env), and gives the same numbers as single envs reset with the same seeds.

Importing this module requires MuJoCo (:func:`envs.locomotion.require_mujoco` says what
to install).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import Task, _check_horizon
from envs.locomotion import (
    DEFAULT_HORIZON,
    AntDir,
    AntGoal,
    AntVel,
    HalfCheetahDir,
    HalfCheetahVel,
    LocomotionFamily,
    LocomotionTask,
    Robot,
    require_mujoco,
    step_outcome,
)

require_mujoco()

import mujoco  # noqa: E402  (after the check, so a missing MuJoCo gives our message)
from gymnasium.envs.mujoco.ant_v5 import AntEnv  # noqa: E402
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv  # noqa: E402
from gymnasium.envs.mujoco.mujoco_env import expand_model_path  # noqa: E402
from gymnasium.utils import EzPickle, seeding  # noqa: E402


class MujocoWarning(UserWarning):
    """A warning of the MuJoCo library (for example about a deprecated attribute in a model file)."""


@contextmanager
def mujoco_warnings_as_python_warnings() -> Iterator[None]:
    """Route MuJoCo's warnings to Python's ``warnings`` while the block runs.

    MuJoCo otherwise prints each one and appends it to ``MUJOCO_LOG.TXT`` in the working
    directory. As a Python warning each is shown once per process. MuJoCo 4's deprecation of
    ``settotalmass`` in Gymnasium's ``half_cheetah.xml`` (on every compilation; the masses are
    unchanged) is dropped: it would be shown by every sampling worker and says nothing to a user.
    """
    def warn(message: str) -> None:
        if "settotalmass" not in message:
            warnings.warn(f"MuJoCo: {message}", MujocoWarning, stacklevel=3)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(warn)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def load_model(robot: Robot) -> mujoco.MjModel:
    """Compile the robot's model from Gymnasium's assets (the file Gymnasium's v5 env loads)."""
    with mujoco_warnings_as_python_warnings():
        return mujoco.MjModel.from_xml_path(expand_model_path(robot.xml_file))


class DataPool:
    """A compiled model and the simulators (``MjData``) that batched envs gave back, for reuse.

    Allocating an ``MjData`` takes 0.5-1 ms (its arena is several MB), about 5% of a sampling
    call over 400 episodes. A batched env takes its simulators when built and gives them back
    when closed or garbage-collected; simulators in use are never shared, and a reused one is
    reset with ``mj_resetData`` like a fresh one, so reuse changes no number.
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self._free: list[mujoco.MjData] = []

    def take(self, n: int) -> list[mujoco.MjData]:
        """``n`` simulators: given-back ones first, new ones for the rest."""
        reused = [self._free.pop() for _ in range(min(n, len(self._free)))]
        return reused + [mujoco.MjData(self.model) for _ in range(n - len(reused))]

    def give(self, data: list[mujoco.MjData]) -> None:
        """Return simulators for later batches."""
        self._free.extend(data)


def action_space(model: mujoco.MjModel) -> gym.spaces.Box:
    """The actuators' control range as a float32 Box (as Gymnasium's ``MujocoEnv``)."""
    low, high = model.actuator_ctrlrange.copy().astype(np.float32).T
    return gym.spaces.Box(low=low, high=high, dtype=np.float32)


def observation_space(robot: Robot, model: mujoco.MjModel, task: LocomotionTask, oracle: bool) -> gym.spaces.Box:
    """The robot's observation (plus the task vector for oracle envs) as an unbounded float64 Box."""
    size = model.nq - robot.skipped_qpos + model.nv
    size += 6 * (model.nbody - robot.contact_bodies) if robot.contact_bodies is not None else 0
    size += 9 * robot.torso_frame + 3 * robot.torso_com
    size += task.dim if oracle else 0
    return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(size,), dtype=np.float64)


def half_range(space: gym.spaces.Box) -> np.ndarray:
    """Half the width of a Box's range, float64."""
    return (space.high.astype(np.float64) - space.low.astype(np.float64)) / 2.0


def _read_position(robot: Robot, data: mujoco.MjData) -> np.ndarray:
    if robot.position_body is None:
        return data.qpos[: robot.position_dims].copy()
    return data.xpos[robot.position_body, : robot.position_dims].copy()


def _observe(robot: Robot, tasks: np.ndarray, qpos: np.ndarray, qvel: np.ndarray,
             contacts: np.ndarray | None, oracle: bool) -> np.ndarray:
    obs = robot.observe(qpos, qvel, contacts)
    return np.concatenate([obs, tasks], axis=1) if oracle else obs


class _LocomotionEnvMixin:
    """Task handling, reward and horizon on top of a Gymnasium v5 MuJoCo env (put it first in the bases).

    :param task: the task dict (the family's default task when ``None``).
    :param horizon: steps before the episode is truncated.
    :param oracle: append the task vector to the observation.
    :param render_mode: passed to Gymnasium's env.
    """

    family: ClassVar[type[LocomotionFamily]]
    robot: Robot
    data: Any
    model: Any
    frame_skip: int
    dt: float
    action_space: gym.spaces.Box

    def __init__(self, task: Task | None = None, horizon: int = DEFAULT_HORIZON, oracle: bool = False,
                 render_mode: str | None = None) -> None:
        _check_horizon(horizon)
        if not isinstance(oracle, bool):
            raise ValueError(f"oracle must be true or false, got {oracle!r}")
        self.robot = self.family.robots["v5"]
        self.task_def = self.family.task_definition()
        self._task = self.task_def.encode(self.task_def.default if task is None else task)
        self.horizon, self.oracle = int(horizon), oracle
        with mujoco_warnings_as_python_warnings():
            super().__init__(  # type: ignore[call-arg]
                exclude_current_positions_from_observation=self.robot.skipped_qpos > 0, render_mode=render_mode
            )
        EzPickle.__init__(self, task=task, horizon=horizon, oracle=oracle, render_mode=render_mode)
        self.observation_space = observation_space(self.robot, self.model, self.task_def, oracle)
        self._half_range = half_range(self.action_space)
        self._steps = 0
        self._needs_reset = True

    def set_task(self, task: Task) -> None:
        """Set the task; takes effect immediately."""
        self._task = self.task_def.encode(task)

    def get_task(self) -> Task:
        """The current task (a copy)."""
        if self.task_def.dim == 1:
            return {self.task_def.key: float(self._task[0])}
        return {self.task_def.key: self._task.copy()}

    def _observation(self) -> np.ndarray:
        contacts = self.data.cfrc_ext[None] if self.robot.needs_contacts else None
        return _observe(self.robot, self._task[None], self.data.qpos[None], self.data.qvel[None], contacts,
                        self.oracle)[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Gymnasium's reset (noise on qpos and qvel); ``options={"task": task}`` sets the task first."""
        if options is not None and "task" in options:
            self.set_task(options["task"])
        super().reset(seed=seed)  # type: ignore[misc]
        self._steps = 0
        self._needs_reset = False
        return self._observation(), {"task": self.get_task()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Simulate ``frame_skip`` steps with the clipped action; reward and termination of the family."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        before = _read_position(self.robot, self.data)
        self.do_simulation(action, self.frame_skip)  # type: ignore[attr-defined]
        after = _read_position(self.robot, self.data)
        contacts = self.data.cfrc_ext[None] if self.robot.needs_contacts else None
        velocity = (after - before)[None] / self.dt
        reward, terminated = step_outcome(
            self.robot, self.task_def, self._task[None], velocity, after[None], self.data.qpos[None],
            self.data.qvel[None], contacts, action[None], self._half_range,
        )
        self._steps += 1
        if self.render_mode == "human":  # type: ignore[attr-defined]
            self.render()  # type: ignore[attr-defined]
        info = {"velocity": velocity[0], "position": after, "task": self.get_task()}
        return self._observation(), float(reward[0]), bool(terminated[0]), self._steps >= self.horizon, info


class HalfCheetahVelEnv(_LocomotionEnvMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with a target velocity (:class:`envs.locomotion.HalfCheetahVel`)."""

    family = HalfCheetahVel


class HalfCheetahDirEnv(_LocomotionEnvMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with a running direction (:class:`envs.locomotion.HalfCheetahDir`)."""

    family = HalfCheetahDir


class AntVelEnv(_LocomotionEnvMixin, AntEnv):
    """Ant-v5 with a target velocity (:class:`envs.locomotion.AntVel`)."""

    family = AntVel


class AntDirEnv(_LocomotionEnvMixin, AntEnv):
    """Ant-v5 with a running direction (:class:`envs.locomotion.AntDir`)."""

    family = AntDir


class AntGoalEnv(_LocomotionEnvMixin, AntEnv):
    """Ant-v5 with a goal position (:class:`envs.locomotion.AntGoal`); observes the torso's (x, y)."""

    family = AntGoal


class LocomotionCopies:
    """What every batched locomotion env shares: its tasks, spaces, per-copy reset generators and flags.

    :param robot: the robot (model, observation, costs).
    :param task: the task definition (reward) of the family.
    :param tasks: one task per copy.
    :param horizon: steps before a copy is truncated.
    :param oracle: append the task vector to the observations.
    :param model: the compiled model (only read).
    """

    def __init__(self, robot: Robot, task: LocomotionTask, tasks: Sequence[Task], horizon: int, oracle: bool,
                 model: mujoco.MjModel) -> None:
        _check_horizon(horizon)
        if len(tasks) == 0:
            raise ValueError("tasks must contain at least one task, got an empty sequence")
        self.robot, self.task, self.model, self.oracle = robot, task, model, oracle
        self.tasks = np.stack([task.encode(t) for t in tasks])
        self.num_envs, self.horizon = len(tasks), int(horizon)
        self.action_space = action_space(model)
        self.observation_space = observation_space(robot, model, task, oracle)
        self.dt = model.opt.timestep * robot.frame_skip
        self._half_range = half_range(self.action_space)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True

    def _check_seeds(self, seeds: np.ndarray | None) -> np.ndarray | None:
        if seeds is not None:
            seeds = np.asarray(seeds)
            if seeds.shape != (self.num_envs,):
                raise ValueError(f"seeds must have shape ({self.num_envs},), got {seeds.shape}")
        return seeds

    def _reset_noise(self, i: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Copy i's reset noise, from ``gymnasium.utils.seeding.np_random(seed)`` or, without a seed, from
        where its generator stands (as a single env reset without a seed)."""
        if seed is not None or self._rngs[i] is None:
            self._rngs[i] = seeding.np_random(seed)[0]
        rng = self._rngs[i]
        assert rng is not None
        return self.robot.reset_noise(rng, self.model.nq, self.model.nv)

    def _started(self) -> None:
        """Flags of a fresh episode in every copy."""
        self._steps[:] = 0
        self._terminated[:] = False
        self._truncated[:] = False
        self._needs_reset = False

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, *self.action_space.shape):
            raise ValueError(f"actions must have shape {(self.num_envs, *self.action_space.shape)}, "
                             f"got {actions.shape}")
        return actions


class MujocoBatch(LocomotionCopies):
    """:class:`~envs.base.BatchedTaskEnv` over n MuJoCo simulators sharing one model.

    :param robot: the robot (model file, frame skip, observation, costs).
    :param task: the task definition (reward) of the family.
    :param tasks: one task per copy.
    :param horizon: steps before a copy is truncated.
    :param oracle: append the task vector to the observations.
    :param pool: the compiled model (only read, never modified) and reusable simulators.
    """

    def __init__(self, robot: Robot, task: LocomotionTask, tasks: Sequence[Task], horizon: int,
                 oracle: bool, pool: DataPool) -> None:
        super().__init__(robot, task, tasks, horizon, oracle, pool.model)
        self._data = pool.take(self.num_envs)
        self._give_back = weakref.finalize(self, pool.give, self._data)
        n, model = self.num_envs, pool.model
        self._qpos, self._qvel = np.zeros((n, model.nq)), np.zeros((n, model.nv))
        self._position = np.zeros((n, robot.position_dims))
        self._contacts = np.zeros((n, model.nbody, 6)) if robot.needs_contacts else None

    def _gather(self, i: int, data: mujoco.MjData) -> None:
        """Copy copy ``i``'s state into the batch arrays."""
        self._qpos[i] = data.qpos
        self._qvel[i] = data.qvel
        if self.robot.position_body is not None:
            self._position[i] = data.xpos[self.robot.position_body, : self.robot.position_dims]
        if self._contacts is not None:
            self._contacts[i] = data.cfrc_ext

    def _positions(self) -> np.ndarray:
        if self.robot.position_body is None:
            return self._qpos[:, : self.robot.position_dims].copy()
        return self._position.copy()

    def _reset_copy(self, i: int, seed: int | None) -> None:
        """Gymnasium's v5 reset: ``mj_resetData``, then uniform noise on qpos and normal noise on qvel."""
        data = self._data[i]
        mujoco.mj_resetData(self.model, data)
        qpos_noise, qvel_noise = self._reset_noise(i, seed)
        data.qpos[:] = self.model.qpos0 + qpos_noise
        data.qvel[:] = qvel_noise
        mujoco.mj_forward(self.model, data)
        self._gather(i, data)

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        """Reset every copy (copy i as a single env reset with ``seed=seeds[i]``); (n, obs_dim) float64."""
        if len(self._data) != self.num_envs:
            raise RuntimeError("this batched env is closed (its simulators went back to the pool)")
        seeds = self._check_seeds(seeds)
        for i in range(self.num_envs):
            self._reset_copy(i, None if seeds is None else int(seeds[i]))
        self._started()
        return _observe(self.robot, self.tasks, self._qpos, self._qvel, self._contacts, self.oracle)

    def set_state(self, index: int, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Put copy ``index`` in a given state (as Gymnasium's ``set_state``); returns its observation."""
        if self._needs_reset:
            raise RuntimeError("call reset() before set_state()")
        data = self._data[index]
        data.qpos[:] = qpos
        data.qvel[:] = qvel
        mujoco.mj_forward(self.model, data)
        self._gather(index, data)
        return _observe(self.robot, self.tasks, self._qpos, self._qvel, self._contacts, self.oracle)[index]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the live copies; done copies keep their observation, get reward 0.0 and keep their flags."""
        actions = self._check_actions(actions)
        actions = np.clip(actions, self.action_space.low, self.action_space.high)
        alive = ~(self._terminated | self._truncated)
        before = self._positions()
        self._simulate(actions, alive)
        after = self._positions()
        reward, terminated = step_outcome(
            self.robot, self.task, self.tasks, (after - before) / self.dt, after, self._qpos, self._qvel,
            self._contacts, actions, self._half_range,
        )
        self._steps += alive
        self._terminated = np.where(alive, terminated, self._terminated)
        self._truncated = np.where(alive, self._steps >= self.horizon, self._truncated)
        obs = _observe(self.robot, self.tasks, self._qpos, self._qvel, self._contacts, self.oracle)
        return obs, np.where(alive, reward, 0.0), self._terminated.copy(), self._truncated.copy()

    def _simulate(self, actions: np.ndarray, alive: np.ndarray) -> None:
        """``frame_skip`` simulator steps for every live copy (the only per-copy Python loop)."""
        model, nstep, contacts = self.model, self.robot.frame_skip, self._contacts is not None
        for i in np.flatnonzero(alive):
            data = self._data[i]
            data.ctrl[:] = actions[i]
            mujoco.mj_step(model, data, nstep=nstep)
            if contacts:
                mujoco.mj_rnePostConstraint(model, data)  # cfrc_ext, as Gymnasium's do_simulation
            self._gather(i, data)

    def close(self) -> None:
        """Give the simulators back to the pool (also done when the env is garbage-collected)."""
        self._give_back()
        self._needs_reset = True
        self._data = []


V5_ENVS: dict[str, type[gym.Env]] = {
    env.family.name: env for env in (HalfCheetahVelEnv, HalfCheetahDirEnv, AntVelEnv, AntDirEnv, AntGoalEnv)
}
