"""Locomotion task families of Finn et al. (2017) on Gymnasium's MuJoCo v5 robots.

This module holds what is plain NumPy: the task distributions, the reward definitions
(vectorised over copies, shared by the single envs and the batched env so that both give
the same numbers), the robots' constants and the :class:`~envs.base.TaskFamily` classes.
The MuJoCo side (Gymnasium env subclasses, batched stepping) is in
:mod:`envs.mujoco_robots`, imported only when an env is built, so ``import envs`` works
without MuJoCo and building a locomotion family without it raises
:class:`MissingDependencyError` with the command to run.

Rewards, with ``v`` the forward (x) velocity of the robot over one env step
(``dt = 5 x 0.01 s``), ``a`` the action clipped to the action space, ``f`` the external
contact forces ``cfrc_ext`` of every body clipped to ``[-1, 1]``:

==================  ==============================  ===========================================================
family              task distribution               reward per step
==================  ==============================  ===========================================================
``halfcheetah_vel`` ``velocity ~ U[0, 2]``          ``-|v - velocity| - 0.05 ||a||^2``
``halfcheetah_dir`` ``direction = +/-1``, p = 1/2   ``direction * v - 0.05 ||a||^2``
``ant_vel``         ``velocity ~ U[0, 3]``          ``-|v - velocity| + 1 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
``ant_dir``         ``direction = +/-1``, p = 1/2   ``direction * v - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
``ant_goal``        ``goal ~ U[-3, 3]^2``           ``-||p - goal||_1 + 4 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
==================  ==============================  ===========================================================

(``p`` is the Ant torso's (x, y) position after the step.) These are the coefficients of
the authors' code (rllab ``maml_rl``: ``half_cheetah_env_rand*.py``, ``ant_env_rand*.py``),
which pytorch-maml-rl keeps; the ``+1`` / ``+4`` offsets and the survive bonus ``0.05``
keep the Ant's reward positive so that it does not learn to end episodes early. The Ant
episode terminates when the torso height leaves ``[0.2, 1.0]`` or the state is not
finite (as there); the HalfCheetah never terminates. Episodes are truncated after
``horizon`` steps (200 by default, as in the paper).

Where this differs from other implementations, and why:

* Physics, observations and reset noise are Gymnasium's v5 ``HalfCheetah`` / ``Ant``
  (current MuJoCo bindings; rllab and pytorch-maml-rl used mujoco-py and older models).
  HalfCheetah observes ``qpos[1:], qvel`` (17 numbers; rllab and pytorch-maml-rl add the
  torso's centre of mass, 20). Ant observes ``qpos[2:], qvel`` and the clipped contact
  forces of the 13 non-world bodies (105 numbers; rllab observes all of ``qpos``, the
  world body's forces, the torso's rotation matrix and centre of mass, 125). ``ant_goal``
  also observes the torso's (x, y) (``qpos[:2]``, 107 numbers): without them a goal
  position cannot be reached except by dead reckoning, and rllab observes them too.
* ``v`` is measured as Gymnasium v5 does: the change of ``qpos[0]`` (HalfCheetah) or of
  the torso body's position ``xpos`` (Ant) divided by ``dt``, as pytorch-maml-rl does;
  rllab used mujoco-py's centre-of-mass velocity of the torso.
* The control cost is on the *clipped* action (rllab clips in the env, pytorch-maml-rl in
  a wrapper), so exploration noise beyond the bounds is not penalised; Gymnasium's own
  rewards use the raw action and other weights (0.1 for HalfCheetah, 0.5 for Ant).
* Contact forces: since MuJoCo 2.0, ``cfrc_ext`` is computed only by
  ``mj_rnePostConstraint``, which Gymnasium v5 calls after every step, so the contact cost
  and observation are live here. Under mujoco-py with MuJoCo 2.x (gym's Ant-v2/v3) they
  were silently zero (openai/gym#1541), and Gymnasium's Ant-v4 leaves them out by default.
* The survive bonus is paid on every step taken, including the one that terminates
  (rllab); Gymnasium's ``healthy_reward`` is 0 on that step. Other implementations
  (ProMP, garage) do not terminate the Ant at all; we keep Finn et al.'s termination.
* ``ant_goal`` uses the L1 distance of the authors' code, not the L2 of some
  reimplementations.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import BatchedTaskEnv, Task, TaskFamily, _check_horizon

MUJOCO_INSTALL = 'pip install "gymnasium[mujoco]"'
DEFAULT_HORIZON = 200


class MissingDependencyError(ImportError, ValueError):
    """An optional dependency is missing; the message says what to install.

    It is also a ``ValueError`` so that config validation and the command line report it
    as a one-line problem instead of a traceback.
    """


def require_mujoco() -> None:
    """Raise :class:`MissingDependencyError` unless MuJoCo and Gymnasium's MuJoCo envs import."""
    try:
        importlib.import_module("mujoco")
        importlib.import_module("gymnasium.envs.mujoco.mujoco_env")
    except ImportError as error:
        raise MissingDependencyError(
            f"the locomotion task families need MuJoCo, which is not installed or does not import "
            f"({error}); install it with: {MUJOCO_INSTALL}"
        ) from None


# ---------------------------------------------------------------- robots


@dataclass(frozen=True)
class Robot:
    """Constants of one MuJoCo robot as Gymnasium v5 builds it, and Finn et al.'s costs.

    :param xml_file: model file among Gymnasium's MuJoCo assets.
    :param frame_skip: simulator steps per env step.
    :param reset_noise_scale: Gymnasium's reset noise (uniform on qpos, normal on qvel).
    :param position_dims: coordinates of the robot position used for velocity and goals.
    :param position_body: body whose ``xpos`` is the robot position (None: ``qpos[:position_dims]``).
    :param skipped_qpos: leading ``qpos`` entries left out of the observation.
    :param contact_obs: observe the clipped contact forces of the non-world bodies.
    :param ctrl_cost_weight: weight of ``||a||^2`` (``a`` clipped, scaled to [-1, 1]).
    :param contact_cost_weight: weight of ``||clip(cfrc_ext, -1, 1)||^2`` (0: not computed).
    :param survive_reward: paid on every step taken.
    :param healthy_z_range: the episode terminates when ``qpos[2]`` leaves it (None: never).
    """

    name: str
    xml_file: str
    frame_skip: int
    reset_noise_scale: float
    position_dims: int
    position_body: int | None
    skipped_qpos: int
    contact_obs: bool
    ctrl_cost_weight: float
    contact_cost_weight: float
    survive_reward: float
    healthy_z_range: tuple[float, float] | None

    @property
    def needs_contacts(self) -> bool:
        """Whether ``cfrc_ext`` is read (observation or cost)."""
        return self.contact_obs or self.contact_cost_weight > 0

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray | None) -> np.ndarray:
        """Gymnasium v5 observations of n copies: qpos (n, nq), qvel (n, nv), contacts (n, nbody, 6)."""
        parts = [qpos[:, self.skipped_qpos:], qvel]
        if self.contact_obs:
            assert contacts is not None
            parts.append(np.clip(contacts[:, 1:], -1.0, 1.0).reshape(len(qpos), -1))
        return np.concatenate(parts, axis=1)

    def costs(self, actions: np.ndarray, half_range: np.ndarray, contacts: np.ndarray | None) -> np.ndarray:
        """Control plus contact cost minus the survive reward, shape (n,)."""
        scaled = actions / half_range
        cost = self.ctrl_cost_weight * np.sum(scaled * scaled, axis=1)
        if self.contact_cost_weight > 0:
            assert contacts is not None
            clipped = np.clip(contacts, -1.0, 1.0).reshape(len(actions), -1)
            cost = cost + self.contact_cost_weight * np.sum(clipped * clipped, axis=1)
        return cost - self.survive_reward

    def healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Which copies are healthy (finite state, torso height in range), shape (n,) bool."""
        if self.healthy_z_range is None:
            return np.ones(len(qpos), dtype=bool)
        low, high = self.healthy_z_range
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        return finite & (qpos[:, 2] >= low) & (qpos[:, 2] <= high)


HALF_CHEETAH = Robot(
    name="half_cheetah", xml_file="half_cheetah.xml", frame_skip=5, reset_noise_scale=0.1,
    position_dims=1, position_body=None, skipped_qpos=1, contact_obs=False,
    ctrl_cost_weight=0.05, contact_cost_weight=0.0, survive_reward=0.0, healthy_z_range=None,
)
ANT = Robot(
    name="ant", xml_file="ant.xml", frame_skip=5, reset_noise_scale=0.1,
    position_dims=2, position_body=1, skipped_qpos=2, contact_obs=True,
    ctrl_cost_weight=0.005, contact_cost_weight=0.0005, survive_reward=0.05, healthy_z_range=(0.2, 1.0),
)
ANT_WITH_POSITION = replace(ANT, name="ant_with_position", skipped_qpos=0)


# ---------------------------------------------------------------- tasks


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _check_range(low: Any, high: Any, low_name: str, high_name: str) -> tuple[float, float]:
    low, high = _finite_number(low, low_name), _finite_number(high, high_name)
    if not low < high:
        raise ValueError(f"{low_name} must be < {high_name}, got {low_name}={low!r}, {high_name}={high!r}")
    return low, high


def _task_dict(task: Any, key: str) -> Any:
    if not isinstance(task, dict) or key not in task:
        raise ValueError(f"task must be a dict with key {key!r}, got {task!r}")
    return task[key]


class LocomotionTask(ABC):
    """A task distribution and the task-dependent part of the reward (NumPy, vectorised).

    A task is a dict with one key; :meth:`encode` turns it into a float vector of length
    ``dim`` (also what the oracle variants append to the observation).
    """

    key: ClassVar[str]
    dim: ClassVar[int]
    default: ClassVar[Task]

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks using only ``rng``."""

    @abstractmethod
    def encode(self, task: Task) -> np.ndarray:
        """The task as a float64 vector of shape (dim,); raises ``ValueError`` when malformed."""

    @abstractmethod
    def progress(self, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Task reward of n copies: tasks (n, dim), velocity and position (n, position_dims)."""


class TargetVelocity(LocomotionTask):
    """Run at a target forward velocity ``~ U[low, high]``: ``-|v - velocity| + offset``."""

    key, dim, default = "velocity", 1, {"velocity": 0.0}

    def __init__(self, low: float, high: float, offset: float = 0.0) -> None:
        self.low, self.high = _check_range(low, high, "velocity_low", "velocity_high")
        self.offset = offset

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"velocity": float(v)} for v in rng.uniform(self.low, self.high, size=n)]

    def encode(self, task: Task) -> np.ndarray:
        return np.array([_finite_number(_task_dict(task, "velocity"), "task['velocity']")])

    def progress(self, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray) -> np.ndarray:
        return -np.abs(velocity[:, 0] - tasks[:, 0]) + self.offset


class Direction(LocomotionTask):
    """Run forward (+1) or backward (-1), each with probability 1/2: ``direction * v``."""

    key, dim, default = "direction", 1, {"direction": 1.0}

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"direction": float(d)} for d in 2.0 * rng.integers(0, 2, size=n) - 1.0]

    def encode(self, task: Task) -> np.ndarray:
        direction = _task_dict(task, "direction")
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"task['direction'] must be +1 or -1, got {direction!r}")
        return np.array([float(direction)])

    def progress(self, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray) -> np.ndarray:
        return tasks[:, 0] * velocity[:, 0]


class GoalPosition(LocomotionTask):
    """Reach a goal position ``~ U[low, high]^2``: ``-||p - goal||_1 + offset``."""

    key, dim, default = "goal", 2, {"goal": np.zeros(2)}

    def __init__(self, low: float, high: float, offset: float) -> None:
        self.low, self.high = _check_range(low, high, "goal_low", "goal_high")
        self.offset = offset

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"goal": goal} for goal in rng.uniform(self.low, self.high, size=(n, 2))]

    def encode(self, task: Task) -> np.ndarray:
        goal = np.array(_task_dict(task, "goal"), dtype=np.float64)
        if goal.shape != (2,) or not np.all(np.isfinite(goal)):
            raise ValueError(f"task['goal'] must be 2 finite numbers, got {task['goal']!r}")
        return goal

    def progress(self, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray) -> np.ndarray:
        return -np.abs(position - tasks).sum(axis=1) + self.offset


def step_outcome(
    robot: Robot, task: LocomotionTask, tasks: np.ndarray, before: np.ndarray, after: np.ndarray,
    qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray | None, actions: np.ndarray,
    half_range: np.ndarray, dt: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity, reward and termination of n copies after one env step.

    Shared by the single envs (n = 1) and the batched env, so both compute the same numbers.

    :param tasks: encoded tasks, (n, task.dim).
    :param before: robot positions before the step, (n, position_dims); ``after`` after it.
    :param qpos: (n, nq) and ``qvel`` (n, nv) after the step.
    :param contacts: ``cfrc_ext`` after the step, (n, nbody, 6), when the robot needs it.
    :param actions: clipped actions, (n, action_dim); ``half_range`` half the action range.
    :param dt: duration of one env step.
    :return: ``(velocity (n, position_dims), reward (n,), terminated (n,) bool)``.
    """
    velocity = (after - before) / dt
    reward = task.progress(tasks, velocity, after) - robot.costs(actions, half_range, contacts)
    return velocity, reward, ~robot.healthy(qpos, qvel)


# ---------------------------------------------------------------- families


class LocomotionFamily(TaskFamily):
    """Base of the MuJoCo locomotion families: a robot, a task distribution, a horizon.

    Subclasses set ``name``, ``robot``, ``env_id`` (the registered single env; the oracle
    variant is :meth:`oracle_env_id`), ``env_class`` (its class name in
    :mod:`envs.mujoco_robots`) and :meth:`task_definition`.

    :param task: the task distribution and reward.
    :param horizon: steps per episode (default 200, as in Finn et al.).
    :param oracle: append the task vector to every observation (the paper's oracle baseline).
    """

    robot: ClassVar[Robot]
    env_id: ClassVar[str]
    env_class: ClassVar[str]

    def __init__(self, task: LocomotionTask, horizon: int = DEFAULT_HORIZON, oracle: bool = False) -> None:
        _check_horizon(horizon)
        if not isinstance(oracle, bool):
            raise ValueError(f"oracle must be true or false, got {oracle!r}")
        require_mujoco()
        self.task = task
        self.horizon = int(horizon)
        self.oracle = oracle
        self._pool: Any = None  # mujoco_robots.DataPool: the compiled model and reusable simulators

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the simulators (rebuilt on first use)."""
        return {**self.__dict__, "_pool": None}

    @staticmethod
    @abstractmethod
    def task_definition() -> LocomotionTask:
        """The family's task definition with its default distribution (what the single envs use)."""

    @classmethod
    def oracle_env_id(cls) -> str:
        """Gymnasium id of the oracle variant (task appended to the observation)."""
        return cls.env_id.replace("-v", "Oracle-v")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from ``rng`` only (same generator state, same tasks)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return self.task.sample(int(n), rng)

    def make_env(self, task: Task | None = None, **kwargs: Any) -> gym.Env:
        """A single Gymnasium env (a subclass of Gymnasium's v5 robot) set to ``task``.

        ``kwargs`` go to its constructor (``horizon``, ``oracle``: the family's by default;
        ``render_mode``).
        """
        from envs import mujoco_robots

        kwargs.setdefault("horizon", self.horizon)
        kwargs.setdefault("oracle", self.oracle)
        return getattr(mujoco_robots, self.env_class)(task=task, **kwargs)

    def make_batched(self, tasks: Sequence[Task]) -> BatchedTaskEnv:
        """A :class:`~envs.mujoco_robots.MujocoBatch`: one simulator per task stepped without
        Gymnasium's per-step wrappers, with the same numbers as :meth:`make_env` envs."""
        from envs import mujoco_robots

        if self._pool is None:
            self._pool = mujoco_robots.DataPool(mujoco_robots.load_model(self.robot))
        return mujoco_robots.MujocoBatch(
            self.robot, self.task, tasks, horizon=self.horizon, oracle=self.oracle, pool=self._pool
        )


class HalfCheetahVel(LocomotionFamily):
    """HalfCheetah running at a target velocity ``~ U[velocity_low, velocity_high]`` (default U[0, 2]).

    Reward ``-|v - velocity| - 0.05 ||a||^2``; see the module docstring.
    """

    name = "halfcheetah_vel"
    robot = HALF_CHEETAH
    env_id, env_class = "metarl/HalfCheetahVel-v0", "HalfCheetahVelEnv"

    @staticmethod
    def task_definition(velocity_low: float = 0.0, velocity_high: float = 2.0) -> LocomotionTask:
        return TargetVelocity(velocity_low, velocity_high)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False,
                 velocity_low: float = 0.0, velocity_high: float = 2.0) -> None:
        super().__init__(self.task_definition(velocity_low, velocity_high), horizon, oracle)


class HalfCheetahDir(LocomotionFamily):
    """HalfCheetah running forward or backward (``direction = +/-1``, probability 1/2 each).

    Reward ``direction * v - 0.05 ||a||^2``; see the module docstring.
    """

    name = "halfcheetah_dir"
    robot = HALF_CHEETAH
    env_id, env_class = "metarl/HalfCheetahDir-v0", "HalfCheetahDirEnv"

    @staticmethod
    def task_definition() -> LocomotionTask:
        return Direction()

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False) -> None:
        super().__init__(self.task_definition(), horizon, oracle)


class AntVel(LocomotionFamily):
    """Ant running forward at a target velocity ``~ U[velocity_low, velocity_high]`` (default U[0, 3]).

    Reward ``-|v - velocity| + 1 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy. See the module docstring.
    """

    name = "ant_vel"
    robot = ANT
    env_id, env_class = "metarl/AntVel-v0", "AntVelEnv"

    @staticmethod
    def task_definition(velocity_low: float = 0.0, velocity_high: float = 3.0) -> LocomotionTask:
        return TargetVelocity(velocity_low, velocity_high, offset=1.0)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False,
                 velocity_low: float = 0.0, velocity_high: float = 3.0) -> None:
        super().__init__(self.task_definition(velocity_low, velocity_high), horizon, oracle)


class AntDir(LocomotionFamily):
    """Ant running forward or backward along x (``direction = +/-1``, probability 1/2 each).

    Reward ``direction * v - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy. See the module docstring.
    """

    name = "ant_dir"
    robot = ANT
    env_id, env_class = "metarl/AntDir-v0", "AntDirEnv"

    @staticmethod
    def task_definition() -> LocomotionTask:
        return Direction()

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False) -> None:
        super().__init__(self.task_definition(), horizon, oracle)


class AntGoal(LocomotionFamily):
    """Ant walking to a goal position ``~ U[goal_low, goal_high]^2`` (default U[-3, 3]^2).

    Reward ``-||p - goal||_1 + 4 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy; observes the torso's (x, y). See the module docstring.
    """

    name = "ant_goal"
    robot = ANT_WITH_POSITION
    env_id, env_class = "metarl/AntGoal-v0", "AntGoalEnv"

    @staticmethod
    def task_definition(goal_low: float = -3.0, goal_high: float = 3.0) -> LocomotionTask:
        return GoalPosition(goal_low, goal_high, offset=4.0)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False,
                 goal_low: float = -3.0, goal_high: float = 3.0) -> None:
        super().__init__(self.task_definition(goal_low, goal_high), horizon, oracle)


LOCOMOTION_FAMILIES: tuple[type[LocomotionFamily], ...] = (HalfCheetahVel, HalfCheetahDir, AntVel, AntDir, AntGoal)
