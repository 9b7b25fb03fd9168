"""The environments Finn et al. ran (rllab's MuJoCo envs in cbfinn/maml_rl), stepped by MuJoCo's batch API.

* :func:`build_model` compiles the robot from Gymnasium's asset with the edits that make it rllab's
  (:mod:`envs.locomotion` lists them) and adds the sensors the env reads: the torso subtree's centre of
  mass and its linear velocity, and, where contact forces are used, a torso acceleration sensor, whose
  presence makes ``mj_forward`` compute ``cfrc_ext``.
* :class:`RllabBatch` steps n (task, episode) copies with one call into MuJoCo's C code per env step
  (:class:`mujoco.batch.Batch`, a thread pool over the copies, each keeping its own simulator). As rllab's
  ``forward_dynamics`` does, each step ends with the forward pass at the new state: positions and
  velocities (``mjSTAGE_VEL``, free in a persistent batch: the next step continues from it) and, for
  robots that read contact forces, accelerations and constraint forces under the step's controls
  (``mjSTAGE_ACC``, about the cost of another forward pass). Observations, rewards and flags are then
  computed on arrays, with the functions of :mod:`envs.locomotion`.
* :class:`LocomotionEnv` is the single Gymnasium env: a batch of one copy, so the numbers of both agree.

Results are the same at any thread count (MuJoCo's batch API is bit-identical to a loop over copies).
Importing this module requires MuJoCo.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import Task
from envs.locomotion import DEFAULT_HORIZON, LocomotionTask, Robot, require_mujoco, step_outcome

require_mujoco()

import mujoco  # noqa: E402  (after the check, so a missing MuJoCo gives our message)
from gymnasium.envs.mujoco.mujoco_env import expand_model_path  # noqa: E402
from mujoco import batch as mj_batch  # noqa: E402

from envs.mujoco_robots import LocomotionCopies, mujoco_warnings_as_python_warnings  # noqa: E402

TORSO = "torso"
COM, COM_VELOCITY = slice(0, 3), slice(3, 6)  # columns of the sensor data (see build_model)


def build_model(robot: Robot) -> mujoco.MjModel:
    """The robot's model: Gymnasium's asset with rllab's timestep and contact impedance, and the env's sensors."""
    spec = mujoco.MjSpec.from_file(expand_model_path(robot.xml_file))
    if robot.timestep is not None:
        spec.option.timestep = robot.timestep
    if robot.geom_solimp is not None:
        for geom in spec.geoms:
            geom.solimp = list(robot.geom_solimp)
    body = mujoco.mjtObj.mjOBJ_BODY
    spec.add_sensor(name="torso_com", type=mujoco.mjtSensor.mjSENS_SUBTREECOM, objtype=body, objname=TORSO)
    spec.add_sensor(name="torso_com_velocity", type=mujoco.mjtSensor.mjSENS_SUBTREELINVEL, objtype=body,
                    objname=TORSO)
    if robot.needs_contacts:  # an acceleration sensor makes mj_forward run mj_rnePostConstraint (cfrc_ext)
        spec.add_sensor(name="torso_acceleration", type=mujoco.mjtSensor.mjSENS_FRAMELINACC, objtype=body,
                        objname=TORSO)
    with warnings.catch_warnings(), mujoco_warnings_as_python_warnings():
        # MjSpec's compiler warns of Gymnasium's half_cheetah.xml 'settotalmass' itself; the masses are unchanged.
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return spec.compile()


def initial_qpos(robot: Robot, model: mujoco.MjModel) -> np.ndarray:
    """The ``qpos`` a reset adds noise to: the model's ``init_qpos`` numeric (rllab's Ant) or ``qpos0``."""
    if robot.init_qpos_numeric:
        return model.numeric("init_qpos").data.copy()
    return model.qpos0.copy()


class BatchPool:
    """A compiled model and the persistent MuJoCo batches that batched envs gave back, for reuse.

    Allocating a batch's simulators takes about a millisecond each; a sampler builds a batched env per
    chunk of every call, so batches are taken from here and given back when the env is closed or
    garbage-collected. A batch in use is never shared; a reused one is reset like a fresh one.

    :param model: the compiled model (only read).
    :param threads: threads of each batch (0: one per core).
    """

    def __init__(self, model: mujoco.MjModel, threads: int = 0) -> None:
        self.model, self.threads = model, threads
        self._free: list[mj_batch.Batch] = []

    def take(self, n: int) -> mj_batch.Batch:
        """A batch of at least ``n`` simulations: the smallest given-back one that is large enough, or a new one."""
        fitting = [b for b in self._free if b.nsim >= n]
        if fitting:
            chosen = min(fitting, key=lambda b: b.nsim)
            self._free.remove(chosen)
            return chosen
        return mj_batch.Batch(self.model, nsim=n, nthread=self.threads, persistent=True)

    def give(self, batch: mj_batch.Batch) -> None:
        """Return a batch for later envs."""
        self._free.append(batch)


class RllabBatch(LocomotionCopies):
    """:class:`~envs.base.BatchedTaskEnv` over the first n simulations of a persistent MuJoCo batch.

    :param robot: an ``"rllab"`` robot (model edits, observation, costs).
    :param task: the task definition (reward) of the family.
    :param tasks: one task per copy.
    :param horizon: steps before a copy is truncated.
    :param oracle: append the task vector to the observations.
    :param pool: the compiled model and reusable batches.
    """

    def __init__(self, robot: Robot, task: LocomotionTask, tasks: Sequence[Task], horizon: int, oracle: bool,
                 pool: BatchPool) -> None:
        super().__init__(robot, task, tasks, horizon, oracle, pool.model)
        model = pool.model
        self._low, self._high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        self._init_qpos = initial_qpos(robot, model)
        self._stage = mujoco.mjtStage.mjSTAGE_ACC if robot.needs_contacts else mujoco.mjtStage.mjSTAGE_VEL
        self._batch = pool.take(self.num_envs)
        self._give_back = weakref.finalize(self, pool.give, self._batch)
        n, batch = self.num_envs, self._batch
        self._mine = np.arange(batch.nsim) < n  # the simulations of this env
        self._qpos, self._qvel, self._ctrl = (batch.bind(name)[:n] for name in ("qpos", "qvel", "ctrl"))
        self._sensors = batch.bind("sensordata")[:n]
        torso = model.body(TORSO).id
        self._xmat = batch.bind("xmat")[:n, torso] if robot.torso_frame else None
        self._contacts = batch.bind("cfrc_ext")[:n] if robot.needs_contacts else None

    def _observe(self) -> np.ndarray:
        obs = self.robot.observe(self._qpos, self._qvel, self._contacts, self._xmat, self._sensors[:, COM])
        return np.concatenate([obs, self.tasks], axis=1) if self.oracle else obs

    def reset(self, seeds: np.ndarray | None = None) -> np.ndarray:
        """Reset every copy (rllab's reset: ``init_qpos + N(0, 0.01^2)``, ``N(0, 0.1^2)`` velocities, then the
        forward pass); copy i draws its noise from ``gymnasium.utils.seeding.np_random(seeds[i])``, or goes on
        with its generator when no seed is given. Returns (n, obs_dim) float64 observations."""
        if not self._mine.any():
            raise RuntimeError("this batched env is closed (its simulators went back to the pool)")
        seeds = self._check_seeds(seeds)
        noise = [self._reset_noise(i, None if seeds is None else int(seeds[i])) for i in range(self.num_envs)]
        self._batch.reset(self._mine, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._qpos[:] = self._init_qpos + np.stack([q for q, _ in noise])
        self._qvel[:] = np.stack([v for _, v in noise])
        self._batch.forward(self._mine, stage=self._stage)
        self._started()
        return self._observe()

    def set_state(self, index: int, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Put copy ``index`` in a given state (as Gymnasium's ``set_state``); returns its observation."""
        if self._needs_reset:
            raise RuntimeError("call reset() before set_state()")
        self._qpos[index] = qpos
        self._qvel[index] = qvel
        self._batch.forward(np.array([index]), stage=self._stage)
        return self._observe()[index]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the live copies; done copies keep their observation, get reward 0.0 and keep their flags."""
        actions = np.minimum(np.maximum(self._check_actions(actions), self._low), self._high)
        done = self._terminated | self._truncated
        self._ctrl[:] = actions
        stepped = self._mine
        if done.any():
            stepped = stepped.copy()
            stepped[: self.num_envs] = ~done
        self._batch.step(stepped, nstep=self.robot.frame_skip, stage=self._stage)
        dims = self.robot.position_dims
        reward, terminated = step_outcome(
            self.robot, self.task, self.tasks, self._sensors[:, COM_VELOCITY][:, :dims],
            self._sensors[:, COM][:, :dims], self._qpos, self._qvel, self._contacts, actions, self._half_range,
        )
        if done.any():  # done copies were not stepped: they keep their flags and get no reward
            terminated, reward = np.where(done, self._terminated, terminated), np.where(done, 0.0, reward)
        self._steps += ~done
        self._terminated = terminated
        self._truncated = self._truncated | (self._steps >= self.horizon)
        return self._observe(), reward, self._terminated.copy(), self._truncated.copy()

    def velocity(self) -> np.ndarray:
        """Each copy's torso subtree centre-of-mass velocity at its current state, (n, 3)."""
        return self._sensors[:, COM_VELOCITY].copy()

    def data(self, index: int) -> mujoco.MjData:
        """A copy of copy ``index``'s whole simulator (for rendering or inspection)."""
        return self._batch.get_data(index)

    def close(self) -> None:
        """Give the simulators back to the pool (also done when the env is garbage-collected)."""
        self._give_back()
        self._needs_reset = True
        self._mine[:] = False


class LocomotionEnv(gym.Env):
    """One copy of a family's ``"rllab"`` environment as a Gymnasium env.

    Set the task with ``env.unwrapped.set_task(task)`` or ``env.reset(options={"task": task})``.

    :param robot: an ``"rllab"`` robot.
    :param task_definition: the family's task definition (reward).
    :param task: the task (the definition's default when ``None``).
    :param horizon: steps before the episode is truncated.
    :param oracle: append the task vector to the observation.
    :param render_mode: ``None`` or ``"rgb_array"`` (needs an OpenGL back-end, ``MUJOCO_GL=egl`` or ``osmesa``).
    :param threads: threads of the underlying batch.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, robot: Robot, task_definition: LocomotionTask, task: Task | None = None,
                 horizon: int = DEFAULT_HORIZON, oracle: bool = False, render_mode: str | None = None,
                 threads: int = 1) -> None:
        if not isinstance(oracle, bool):
            raise ValueError(f"oracle must be true or false, got {oracle!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.robot, self.task_def, self.render_mode = robot, task_definition, render_mode
        self._env = RllabBatch(robot, task_definition, [task_definition.default if task is None else task], horizon,
                               oracle, BatchPool(build_model(robot), threads))
        self.model, self.horizon, self.oracle, self.dt = self._env.model, self._env.horizon, oracle, self._env.dt
        self.observation_space, self.action_space = self._env.observation_space, self._env.action_space
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}
        self._renderer: Any = None

    def set_task(self, task: Task) -> None:
        """Set the task; takes effect immediately."""
        self._env.tasks[0] = self.task_def.encode(task)

    def get_task(self) -> Task:
        """The current task (a copy)."""
        encoded = self._env.tasks[0]
        return {self.task_def.key: float(encoded[0]) if self.task_def.dim == 1 else encoded.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """rllab's reset noise from ``seeding.np_random(seed)``; ``options={"task": task}`` sets the task first."""
        super().reset(seed=seed)
        if options is not None and "task" in options:
            self.set_task(options["task"])
        obs = self._env.reset(None if seed is None else np.array([seed]))
        return obs[0], {"task": self.get_task()}

    @property
    def init_qpos(self) -> np.ndarray:
        """The ``qpos`` a reset adds noise to (a copy), as Gymnasium's ``MujocoEnv.init_qpos``."""
        return initial_qpos(self.robot, self.model)

    def get_data(self) -> mujoco.MjData:
        """A copy of the whole simulator (state and the quantities computed from it), for inspection."""
        return self._env.data(0)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Put the simulator in a given state (after a reset); returns the observation there."""
        return self._env.set_state(0, np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One simulator step with the clipped action; the family's reward and termination."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        obs, reward, terminated, truncated = self._env.step(action[None])
        info = {"velocity": self._env.velocity()[0, : self.robot.position_dims], "task": self.get_task()}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        """An RGB image from the model's tracking camera (``render_mode="rgb_array"``), else None."""
        if self.render_mode is None:
            return None
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, height=480, width=640)
            except Exception as error:  # noqa: BLE001  (MuJoCo raises several kinds when no GL context exists)
                raise RuntimeError(f"rendering needs an OpenGL back-end (set MUJOCO_GL=egl or MUJOCO_GL=osmesa, "
                                   f"with its library installed): {error}") from None
        self._renderer.update_scene(self._env.data(0), camera="track")
        return self._renderer.render()

    def close(self) -> None:
        """Release the simulator and the renderer."""
        self._env.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
