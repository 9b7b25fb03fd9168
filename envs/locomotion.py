"""Locomotion task families of Finn et al. (2017): HalfCheetah and Ant, as the authors ran them.

This module holds what is plain NumPy: the task distributions, the reward definitions
(vectorised over copies, shared by every single env and batched env so that all give the
same numbers), the robots (:class:`Robot`) and the :class:`~envs.base.TaskFamily` classes.
The MuJoCo side is in :mod:`envs.rllab_robots` (the default robots) and
:mod:`envs.mujoco_robots` (Gymnasium's v5 robots), imported only when an env is built, so
``import envs`` works without MuJoCo and building a locomotion family without it raises
:class:`MissingDependencyError` with the command to run.

Rewards, with ``v`` the robot's forward (x) velocity, ``a`` the action clipped to [-1, 1],
``f`` the external contact forces ``cfrc_ext`` of every body clipped to ``[-1, 1]``:

==================  ==============================  ===========================================================
family              task distribution               reward per step
==================  ==============================  ===========================================================
``halfcheetah_vel`` ``velocity ~ U[0, 2]``          ``-|v - velocity| - 0.05 ||a||^2``
``halfcheetah_dir`` ``direction = +/-1``           ``direction * v - 0.05 ||a||^2``
``ant_vel``         ``velocity ~ U[0, 3]``          ``-|v - velocity| + 1 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
``ant_dir``         ``direction = +/-1``           ``direction * v - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
``ant_goal``        ``goal ~ U[-3, 3]^2``           ``-||p - goal||_1 + 4 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``
==================  ==============================  ===========================================================

These are the coefficients of the authors' code (cbfinn/maml_rl: ``rllab/envs/mujoco/
half_cheetah_env_rand*.py``, ``ant_env_rand*.py``); the ``+1`` / ``+4`` offsets and the survive
bonus keep the Ant's reward positive so that it does not learn to end episodes early. The Ant
episode terminates when the torso height leaves ``[0.2, 1.0]`` or the state is not finite, and
the survive bonus is paid on the terminating step too; the HalfCheetah never terminates.
Episodes are truncated after ``horizon`` steps (200 by default, as in the paper). The direction
tasks are drawn forward with probability ``forward_probability`` (1/2 by default, the paper's
description). The authors' code encodes a direction as a goal ``g``, backward below a threshold:
``g ~ U[0.1, 0.8]`` below 0.4 (4/7 forward) when the result files were made, and after April 2017
``U[0, 2]`` (``U[0, 3]`` for the Ant) below the middle; their training draws changed to those ranges
78 minutes before their thresholds did.

Two robots per family, chosen with ``robot`` (``env.kwargs: {robot: v5}`` in a config):

``"rllab"`` (the default): the environments the published results were measured on.

* One simulator step per env step (rllab's ``MujocoEnv`` has ``frame_skip = 1`` for both
  models): 0.01 s for the HalfCheetah, 0.02 s for the Ant; a 200-step episode lasts 2 s / 4 s.
* ``v`` is the x-velocity of the torso subtree's centre of mass (the whole robot) at the state
  after the step, rllab's ``get_body_comvel("torso")``; ``p`` (``ant_goal``) is that centre of
  mass's (x, y).
* Observations after the step's forward pass: HalfCheetah ``qpos[1:], qvel`` and the torso
  subtree's centre of mass (20 numbers); Ant all of ``qpos``, ``qvel``, the clipped contact
  forces of all 14 bodies, the torso's rotation matrix and its subtree's centre of mass (125).
  The contact forces are those of the new state under the step's controls, as MuJoCo 1.31's
  ``mj_forward`` gave them.
* Reset: ``init_qpos + N(0, 0.01^2)``, velocities ``N(0, 0.1^2)``; the Ant's ``init_qpos`` is its
  model's ``init_qpos`` numeric (torso at 0.55 m, legs bent), the HalfCheetah's ``qpos0``.
* Models: the HalfCheetah is Gymnasium's ``half_cheetah.xml``, the same model as rllab's. The Ant
  is Gymnasium's ``ant.xml`` with rllab's 0.02 s timestep and contact impedance
  (``solimp = 0.8 0.8 0.01``); rllab's motors (gear 1, range +/-150, driven through rllab's
  action normalisation ``150 a``) are Gymnasium's (gear 150, range +/-1), so the torques and the
  control cost ``0.005 ||150 a / 150||^2`` are the same.

``"v5"``: Gymnasium's v5 robots with the same rewards, as this package had them before: five
simulator steps per env step (0.05 s), ``v`` the finite difference of ``qpos[0]`` (HalfCheetah)
or of the torso's ``xpos`` (Ant) over the step, Gymnasium's v5 observations (HalfCheetah
``qpos[1:], qvel``, 17 numbers; Ant ``qpos[2:], qvel`` and the contact forces of the 13
non-world bodies, 105; ``ant_goal`` also ``qpos[:2]``) and reset noise (``U[-0.1, 0.1]`` on
``qpos``). Returns on them are not comparable with the published ones.

What still differs from the authors' environments: MuJoCo 4's solver, contact model and
integrators replace MuJoCo 1.31's (same models and settings, not the same numerics); a copy
whose simulation diverges is reset by MuJoCo 4 (and warned about) where the authors' would have
run on with non-finite states and terminated (the Ant) or not (the HalfCheetah).
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
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


def headless_rendering_default() -> None:
    """Without a display, MuJoCo's default back-end (GLFW) cannot render: choose EGL where its library
    is installed, unless ``MUJOCO_GL`` says otherwise. Only takes effect before MuJoCo is imported."""
    if ("MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
            and ctypes.util.find_library("EGL")):
        os.environ["MUJOCO_GL"] = "egl"


def require_mujoco() -> None:
    """Raise :class:`MissingDependencyError` unless MuJoCo and Gymnasium's MuJoCo envs import."""
    headless_rendering_default()
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
    """One variant of a MuJoCo robot: how its model is built and stepped, what it observes, its costs.

    Two variants exist for each robot (:data:`ROBOTS`): ``"rllab"``, the environments Finn et al. ran
    (rllab's, in cbfinn/maml_rl), and ``"v5"``, Gymnasium's v5 robots with the same rewards.

    :param variant: ``"rllab"`` (velocity: the torso subtree's centre-of-mass velocity after the step) or
        ``"v5"`` (velocity: the change of the robot position over the step, divided by its duration).
    :param xml_file: model file among Gymnasium's MuJoCo assets (edited as below for ``"rllab"``).
    :param frame_skip: simulator steps per env step.
    :param timestep: simulator timestep replacing the file's (None: the file's).
    :param geom_solimp: contact impedance given to every geom (None: the file's).
    :param init_qpos_numeric: start from the model's ``init_qpos`` numeric instead of ``qpos0``.
    :param qpos_noise: reset noise on ``qpos``: ``"uniform"`` on ``[-scale, scale]`` or ``"normal"``.
    :param qpos_noise_scale: its scale; ``qvel`` gets ``qvel_noise_scale * N(0, 1)``.
    :param position_dims: coordinates of the robot position and velocity used by the tasks.
    :param position_body: body whose ``xpos`` is the robot position (None: ``qpos[:position_dims]``
        for ``"v5"``; ``"rllab"`` robots use the torso subtree's centre of mass).
    :param skipped_qpos: leading ``qpos`` entries left out of the observation.
    :param contact_bodies: observe the clipped contact forces of bodies ``contact_bodies..`` (None: not observed).
    :param torso_frame: observe the torso's rotation matrix (9 numbers).
    :param torso_com: observe the torso subtree's centre of mass (3 numbers).
    :param ctrl_cost_weight: weight of ``||a||^2`` (``a`` clipped, scaled to [-1, 1]).
    :param contact_cost_weight: weight of ``||clip(cfrc_ext, -1, 1)||^2`` over every body (0: not computed).
    :param survive_reward: paid on every step taken.
    :param healthy_z_range: the episode terminates when ``qpos[2]`` leaves it (None: never).
    :param preferred_batch_size: copies a batched env should step at once (None: all), measured by
        ``scripts/benchmark_sampling.py``: each copy keeps its whole simulator between steps, and enough
        copies keep the threads busy while few enough keep those simulators in cache from step to step.
    """

    name: str
    variant: str
    xml_file: str
    frame_skip: int
    position_dims: int
    skipped_qpos: int
    ctrl_cost_weight: float
    qpos_noise: str = "uniform"
    qpos_noise_scale: float = 0.1
    qvel_noise_scale: float = 0.1
    timestep: float | None = None
    geom_solimp: tuple[float, ...] | None = None
    init_qpos_numeric: bool = False
    position_body: int | None = None
    contact_bodies: int | None = None
    torso_frame: bool = False
    torso_com: bool = False
    contact_cost_weight: float = 0.0
    survive_reward: float = 0.0
    healthy_z_range: tuple[float, float] | None = None
    preferred_batch_size: int | None = None

    @property
    def needs_contacts(self) -> bool:
        """Whether ``cfrc_ext`` is read (observation or cost)."""
        return self.contact_bodies is not None or self.contact_cost_weight > 0

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray | None = None,
                torso_xmat: np.ndarray | None = None, torso_com: np.ndarray | None = None) -> np.ndarray:
        """Observations of n copies: qpos (n, nq), qvel (n, nv), contacts (n, nbody, 6), the torso's
        rotation matrix (n, 9) and subtree centre of mass (n, 3), each when the robot observes it."""
        parts = [qpos[:, self.skipped_qpos:], qvel]
        if self.contact_bodies is not None:
            assert contacts is not None
            parts.append(np.clip(contacts[:, self.contact_bodies:], -1.0, 1.0).reshape(len(qpos), -1))
        if self.torso_frame:
            assert torso_xmat is not None
            parts.append(torso_xmat.reshape(len(qpos), 9))
        if self.torso_com:
            assert torso_com is not None
            parts.append(torso_com)
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

    def reset_noise(self, rng: np.random.Generator, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
        """Noise added to the initial ``qpos`` and ``qvel`` of one copy, drawn from ``rng`` in that order."""
        if self.qpos_noise == "uniform":
            qpos = rng.uniform(low=-self.qpos_noise_scale, high=self.qpos_noise_scale, size=nq)
        else:
            qpos = self.qpos_noise_scale * rng.standard_normal(nq)
        return qpos, self.qvel_noise_scale * rng.standard_normal(nv)


HALF_CHEETAH_V5 = Robot(
    name="half_cheetah_v5", variant="v5", xml_file="half_cheetah.xml", frame_skip=5,
    position_dims=1, skipped_qpos=1, ctrl_cost_weight=0.05,
)
ANT_V5 = Robot(
    name="ant_v5", variant="v5", xml_file="ant.xml", frame_skip=5, position_dims=2,
    position_body=1, skipped_qpos=2, contact_bodies=1, ctrl_cost_weight=0.005, contact_cost_weight=0.0005,
    survive_reward=0.05, healthy_z_range=(0.2, 1.0),
)
ANT_V5_WITH_POSITION = replace(ANT_V5, name="ant_v5_with_position", skipped_qpos=0)

# rllab's MujocoEnv: one simulator step per env step (no frame_skip numeric in either model file), reset
# to init_qpos + N(0, 0.01^2) and N(0, 0.1^2) velocities, observations after mj_forward at the new state.
HALF_CHEETAH = replace(
    HALF_CHEETAH_V5, name="half_cheetah", variant="rllab", frame_skip=1, qpos_noise="normal",
    qpos_noise_scale=0.01, torso_com=True, preferred_batch_size=128,
)
# rllab's ant.xml is Gymnasium's with a 0.02 s timestep and softer contacts; its motors (gear 1, range +/-150,
# behind rllab's action normalisation) are Gymnasium's (gear 150, range +/-1).
ANT = replace(
    ANT_V5, name="ant", variant="rllab", frame_skip=1, timestep=0.02, geom_solimp=(0.8, 0.8, 0.01, 0.5, 2.0),
    init_qpos_numeric=True, qpos_noise="normal", qpos_noise_scale=0.01, position_body=None,
    skipped_qpos=0, contact_bodies=0, torso_frame=True, torso_com=True, preferred_batch_size=400,
)
ROBOTS = ("rllab", "v5")


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

    def from_draws(self, draws: np.ndarray, low: float, high: float) -> list[Task]:
        """Tasks from the authors' uniform draws on ``[low, high]`` (their test scripts' goals)."""
        raise ValueError(f"no test task set is known for tasks of key {self.key!r}")


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

    def from_draws(self, draws: np.ndarray, low: float, high: float) -> list[Task]:
        return [{"velocity": float(v)} for v in draws]


class Direction(LocomotionTask):
    """Run forward (+1) with probability ``forward_probability`` (default 1/2), else backward (-1):
    ``direction * v``."""

    key, dim, default = "direction", 1, {"direction": 1.0}

    def __init__(self, forward_probability: float = 0.5) -> None:
        p = _finite_number(forward_probability, "forward_probability")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"forward_probability must be in [0, 1], got {forward_probability!r}")
        self.forward_probability = p

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        if self.forward_probability == 0.5:  # one fair integer draw per task: the default's tasks stay the same
            forward = rng.integers(0, 2, size=n) == 1
        else:
            forward = rng.random(size=n) < self.forward_probability
        return [{"direction": 1.0 if f else -1.0} for f in forward]

    def encode(self, task: Task) -> np.ndarray:
        direction = _task_dict(task, "direction")
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"task['direction'] must be +1 or -1, got {direction!r}")
        return np.array([float(direction)])

    def progress(self, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray) -> np.ndarray:
        return tasks[:, 0] * velocity[:, 0]

    # The authors' direction envs when their result files were made (rllab/envs/mujoco/*_rand_direc.py at
    # cbfinn/maml_rl 4d41869): goals U(0.1, 0.8), backward below 0.4.
    finn2017_backward_below = 0.4

    def from_draws(self, draws: np.ndarray, low: float, high: float) -> list[Task]:
        """Backward below 0.4, forward from it (the authors' encoding for draws on ``[0.1, 0.8]``)."""
        if not low < self.finn2017_backward_below < high:
            raise ValueError(f"direction draws must straddle {self.finn2017_backward_below}, got [{low}, {high}]")
        return [{"direction": -1.0 if g < self.finn2017_backward_below else 1.0} for g in draws]


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
    robot: Robot, task: LocomotionTask, tasks: np.ndarray, velocity: np.ndarray, position: np.ndarray,
    qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray | None, actions: np.ndarray, half_range: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reward and termination of n copies after one env step.

    Shared by every single env and batched env, so that all compute the same numbers.

    :param tasks: encoded tasks, (n, task.dim).
    :param velocity: robot velocities over the step, (n, position_dims); ``position`` positions after it.
    :param qpos: (n, nq) and ``qvel`` (n, nv) after the step.
    :param contacts: ``cfrc_ext`` after the step, (n, nbody, 6), when the robot needs it.
    :param actions: clipped actions, (n, action_dim); ``half_range`` half the action range.
    :return: ``(reward (n,), terminated (n,) bool)``.
    """
    reward = task.progress(tasks, velocity, position) - robot.costs(actions, half_range, contacts)
    return reward, ~robot.healthy(qpos, qvel)


# ---------------------------------------------------------------- families


class LocomotionFamily(TaskFamily):
    """Base of the MuJoCo locomotion families: a robot, a task distribution, a horizon.

    Subclasses set ``name``, ``robots`` (the robot of each variant, :data:`ROBOTS`), ``env_id`` (the
    registered single env; the oracle variant is :meth:`oracle_env_id`), :meth:`task_definition` and,
    where the authors' test script is known, ``finn2017_draws``.

    :param task: the task distribution and reward.
    :param horizon: steps per episode (default 200, as in Finn et al.).
    :param oracle: append the task vector to every observation (the paper's oracle baseline).
    :param robot: ``"rllab"`` (default): the environment Finn et al. ran; ``"v5"``: Gymnasium's v5 robot
        with the same reward (five simulator steps per env step, finite-difference velocity, v5 observations).
    :param threads: threads that step the copies of a batched ``"rllab"`` env (0: one per core).
    """

    robots: ClassVar[dict[str, Robot]]
    env_id: ClassVar[str]
    # The authors' test tasks: their script's np.random.seed and the range of its 40 uniform draws.
    finn2017_draws: ClassVar[tuple[int, float, float] | None] = None

    def __init__(self, task: LocomotionTask, horizon: int = DEFAULT_HORIZON, oracle: bool = False,
                 robot: str = "rllab", threads: int = 0) -> None:
        _check_horizon(horizon)
        if not isinstance(oracle, bool):
            raise ValueError(f"oracle must be true or false, got {oracle!r}")
        if robot not in ROBOTS:
            raise ValueError(f"robot must be one of {', '.join(map(repr, ROBOTS))}, got {robot!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: one per core), got {threads!r}")
        require_mujoco()
        self.task = task
        self.horizon = int(horizon)
        self.oracle = oracle
        self.robot = self.robots[robot]
        self.threads = int(threads)
        self.preferred_batch_size = self.robot.preferred_batch_size
        self._pool: Any = None  # the compiled model and reusable simulators, built on first use

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the simulators (rebuilt on first use)."""
        return {**self.__dict__, "_pool": None}

    @property
    def task_sets(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("finn2017",) if self.finn2017_draws is not None else ()

    def task_set(self, name: str) -> list[Task]:
        """``"finn2017"``: the 40 test tasks of Finn et al.'s results for this family, as their test script
        draws them (``np.random.seed(s)``, then 40 uniform draws: the ranges of which the result files'
        returns show; see ``finn2017_draws`` of each family)."""
        if name != "finn2017" or self.finn2017_draws is None:
            return super().task_set(name)
        seed, low, high = self.finn2017_draws
        return self.task.from_draws(np.random.RandomState(seed).uniform(low, high, size=40), low, high)

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
        """A single Gymnasium env set to ``task`` (the task definition's default when ``None``).

        ``kwargs`` go to its constructor (``horizon``, ``oracle``: the family's by default; ``render_mode``).
        ``"rllab"`` robots give an :class:`envs.rllab_robots.LocomotionEnv`, ``"v5"`` robots a subclass of
        Gymnasium's v5 env (:mod:`envs.mujoco_robots`).
        """
        kwargs.setdefault("horizon", self.horizon)
        kwargs.setdefault("oracle", self.oracle)
        if self.robot.variant == "v5":
            from envs import mujoco_robots

            return mujoco_robots.V5_ENVS[self.name](task=task, **kwargs)
        from envs import rllab_robots

        return rllab_robots.LocomotionEnv(self.robot, self.task_definition(), task, threads=1, **kwargs)

    def make_batched(self, tasks: Sequence[Task]) -> BatchedTaskEnv:
        """A batched env of one copy per task, with the numbers of :meth:`make_env` envs.

        ``"rllab"`` robots: an :class:`envs.rllab_robots.RllabBatch`, every copy stepped by one call into
        MuJoCo's threaded batch API; ``"v5"`` robots: an :class:`envs.mujoco_robots.MujocoBatch`.
        """
        if self.robot.variant == "v5":
            from envs import mujoco_robots

            if self._pool is None:
                self._pool = mujoco_robots.DataPool(mujoco_robots.load_model(self.robot))
            return mujoco_robots.MujocoBatch(
                self.robot, self.task, tasks, horizon=self.horizon, oracle=self.oracle, pool=self._pool
            )
        from envs import rllab_robots

        if self._pool is None:
            self._pool = rllab_robots.BatchPool(rllab_robots.build_model(self.robot), self.threads)
        return rllab_robots.RllabBatch(self.robot, self.task, tasks, self.horizon, self.oracle, self._pool)


def make_registered_env(family: str, **kwargs: Any) -> gym.Env:
    """Entry point of the registered single envs (``gym.make("metarl/HalfCheetahVel-v0", ...)``).

    ``robot``, ``threads`` and the family's distribution arguments build the family; ``task``,
    ``horizon``, ``oracle`` and ``render_mode`` go to its :meth:`~LocomotionFamily.make_env`.
    """
    from envs import FAMILIES

    env_keys = ("task", "horizon", "oracle", "render_mode")
    env_kwargs = {k: kwargs.pop(k) for k in env_keys if k in kwargs}
    task = env_kwargs.pop("task", None)
    return FAMILIES[family](**kwargs).make_env(task, **env_kwargs)


class HalfCheetahVel(LocomotionFamily):
    """HalfCheetah running at a target velocity ``~ U[velocity_low, velocity_high]`` (default U[0, 2]).

    Reward ``-|v - velocity| - 0.05 ||a||^2``; see the module docstring.
    """

    name = "halfcheetah_vel"
    robots = {"rllab": HALF_CHEETAH, "v5": HALF_CHEETAH_V5}
    env_id = "metarl/HalfCheetahVel-v0"
    finn2017_draws = (1, 0.0, 2.0)  # the result files' returns change with the goal as U[0, 2] draws do

    @staticmethod
    def task_definition(velocity_low: float = 0.0, velocity_high: float = 2.0) -> LocomotionTask:
        return TargetVelocity(velocity_low, velocity_high)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False, robot: str = "rllab",
                 threads: int = 0, velocity_low: float = 0.0, velocity_high: float = 2.0) -> None:
        super().__init__(self.task_definition(velocity_low, velocity_high), horizon, oracle, robot, threads)


class DirectionFamily(LocomotionFamily):
    """A robot running forward or backward (:class:`Direction`), forward with probability
    ``forward_probability``."""

    @staticmethod
    def task_definition(forward_probability: float = 0.5) -> LocomotionTask:
        return Direction(forward_probability)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False, robot: str = "rllab",
                 threads: int = 0, forward_probability: float = 0.5) -> None:
        super().__init__(self.task_definition(forward_probability), horizon, oracle, robot, threads)


class HalfCheetahDir(DirectionFamily):
    """HalfCheetah running forward or backward (``direction = +/-1``; forward with probability
    ``forward_probability``, default 1/2).

    Reward ``direction * v - 0.05 ||a||^2``; see the module docstring.
    """

    name = "halfcheetah_dir"
    robots = {"rllab": HALF_CHEETAH, "v5": HALF_CHEETAH_V5}
    env_id = "metarl/HalfCheetahDir-v0"
    finn2017_draws = (1, 0.1, 0.8)  # examples/test_vpg_cheetah_direc.py at their results commit


class AntVel(LocomotionFamily):
    """Ant running forward at a target velocity ``~ U[velocity_low, velocity_high]`` (default U[0, 3]).

    Reward ``-|v - velocity| + 1 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy. See the module docstring.
    """

    name = "ant_vel"
    robots = {"rllab": ANT, "v5": ANT_V5}
    env_id = "metarl/AntVel-v0"
    finn2017_draws = (1, 0.0, 3.0)  # the result files' returns change with the goal as U[0, 3] draws do

    @staticmethod
    def task_definition(velocity_low: float = 0.0, velocity_high: float = 3.0) -> LocomotionTask:
        return TargetVelocity(velocity_low, velocity_high, offset=1.0)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False, robot: str = "rllab",
                 threads: int = 0, velocity_low: float = 0.0, velocity_high: float = 3.0) -> None:
        super().__init__(self.task_definition(velocity_low, velocity_high), horizon, oracle, robot, threads)


class AntDir(DirectionFamily):
    """Ant running forward or backward along x (``direction = +/-1``; forward with probability
    ``forward_probability``, default 1/2).

    Reward ``direction * v - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy. See the module docstring.
    """

    name = "ant_dir"
    robots = {"rllab": ANT, "v5": ANT_V5}
    env_id = "metarl/AntDir-v0"
    # examples/test_vpg_ant_direc.py at their results commit: 20 forward, 20 backward, as every AntDir
    # result file splits its rows (docs/results/finn2017-result-files-apr2017.md). Their July script,
    # maml_examples/test_maml_ant_direc.py (U[0, 3], backward below 1.5), would give 15 and 25.
    finn2017_draws = (2, 0.1, 0.8)


class AntGoal(LocomotionFamily):
    """Ant walking to a goal position ``~ U[goal_low, goal_high]^2`` (default U[-3, 3]^2).

    Reward ``-||p - goal||_1 + 4 - 0.005 ||a||^2 - 0.0005 ||f||^2 + 0.05``; terminates when
    unhealthy; observes the torso's (x, y). See the module docstring. The authors published no
    test script for it, so it has no ``finn2017`` task set.
    """

    name = "ant_goal"
    robots = {"rllab": ANT, "v5": ANT_V5_WITH_POSITION}
    env_id = "metarl/AntGoal-v0"

    @staticmethod
    def task_definition(goal_low: float = -3.0, goal_high: float = 3.0) -> LocomotionTask:
        return GoalPosition(goal_low, goal_high, offset=4.0)

    def __init__(self, horizon: int = DEFAULT_HORIZON, oracle: bool = False, robot: str = "rllab",
                 threads: int = 0, goal_low: float = -3.0, goal_high: float = 3.0) -> None:
        super().__init__(self.task_definition(goal_low, goal_high), horizon, oracle, robot, threads)


LOCOMOTION_FAMILIES: tuple[type[LocomotionFamily], ...] = (HalfCheetahVel, HalfCheetahDir, AntVel, AntDir, AntGoal)
