"""Tests for the locomotion families' Gymnasium v5 robots (``robot: v5``): rewards, observations, batching."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import AntDir, AntGoal, AntVel, HalfCheetahDir, HalfCheetahVel, make_family
from envs.locomotion import ANT_V5 as ANT
from envs.locomotion import HALF_CHEETAH_V5 as HALF_CHEETAH
from envs.locomotion import LOCOMOTION_FAMILIES

pytest.importorskip("mujoco")

ROOT = Path(__file__).resolve().parent.parent
DT = 0.05  # 5 simulator steps of 0.01 s
NAMES = [family.name for family in LOCOMOTION_FAMILIES]
EXPECTED_OBS = {"halfcheetah_vel": 17, "halfcheetah_dir": 17, "ant_vel": 105, "ant_dir": 105, "ant_goal": 107}


def _clipped_sq(action: np.ndarray) -> float:
    return float(np.sum(np.clip(action, -1.0, 1.0) ** 2))


def _contact_sq(env: gym.Env) -> float:
    return float(np.sum(np.clip(env.unwrapped.data.cfrc_ext, -1.0, 1.0) ** 2))


def _cheetah_state(velocity: float) -> tuple[np.ndarray, np.ndarray]:
    qvel = np.zeros(9)
    qvel[0] = velocity
    return np.zeros(9), qvel


def _landed_ant(env: gym.Env, seed: int = 0) -> None:
    """Reset and let the Ant fall onto its legs, so that contact forces are non-zero."""
    env.reset(seed=seed)
    for _ in range(25):  # it bounces for about 15 steps
        env.step(np.zeros(8))
    assert _contact_sq(env) > 0


# ---------------------------------------------------------------- rewards on hand-made states


@pytest.mark.parametrize(("target", "velocity"), [(1.2, 1.5), (0.3, -0.5)])
def test_halfcheetah_vel_reward(target, velocity):
    env = HalfCheetahVel(robot="v5").make_env({"velocity": target})
    env.reset(seed=0)
    env.unwrapped.set_state(*_cheetah_state(velocity))
    action = np.array([0.5, -2.0, 0.1, 0.0, 3.0, -0.3])  # two coordinates beyond the bounds
    x0 = env.unwrapped.data.qpos[0]
    _, reward, terminated, truncated, info = env.step(action)
    v = (env.unwrapped.data.qpos[0] - x0) / DT
    assert v == pytest.approx(velocity, abs=0.3)  # the hand-made state really moves at about that speed
    assert info["velocity"][0] == pytest.approx(v, abs=1e-12)
    assert reward == pytest.approx(-abs(v - target) - 0.05 * _clipped_sq(action), abs=1e-12)
    assert _clipped_sq(action) == pytest.approx(0.25 + 1 + 0.01 + 1 + 0.09)
    assert not terminated and not truncated


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_halfcheetah_dir_reward(direction):
    env = HalfCheetahDir(robot="v5").make_env({"direction": direction})
    env.reset(seed=1)
    env.unwrapped.set_state(*_cheetah_state(2.0))
    action = np.full(6, 0.4)
    x0 = env.unwrapped.data.qpos[0]
    _, reward, terminated, _, _ = env.step(action)
    v = (env.unwrapped.data.qpos[0] - x0) / DT
    assert v > 1.0
    assert reward == pytest.approx(direction * v - 0.05 * _clipped_sq(action), abs=1e-12)
    assert not terminated


def _ant_step(env: gym.Env, action: np.ndarray) -> tuple[float, bool, np.ndarray, np.ndarray]:
    data = env.unwrapped.data
    before = data.xpos[1, :2].copy()
    _, reward, terminated, _, _ = env.step(action)
    return reward, terminated, before, data.xpos[1, :2].copy()


def test_ant_vel_reward_with_contacts():
    env = AntVel(robot="v5").make_env({"velocity": 2.5})
    _landed_ant(env)
    action = np.array([0.05, -0.05, 0.05, 0.0, 0.05, -0.05, 0.05, 1.2])  # the last one beyond the bounds
    reward, terminated, before, after = _ant_step(env, action)
    v = (after[0] - before[0]) / DT
    costs = 0.005 * _clipped_sq(action) + 0.0005 * _contact_sq(env)
    assert _contact_sq(env) > 0
    assert reward == pytest.approx(-abs(v - 2.5) + 1.0 - costs + 0.05, abs=1e-12)
    assert not terminated


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_ant_dir_reward_on_a_moving_torso(direction):
    env = AntDir(robot="v5").make_env({"direction": direction})
    env.reset(seed=2)
    qpos, qvel = env.unwrapped.init_qpos.copy(), np.zeros(14)
    qvel[0] = 1.0  # torso moving forward at 1 m/s
    env.unwrapped.set_state(qpos, qvel)
    action = np.linspace(-1, 1, 8)
    reward, terminated, before, after = _ant_step(env, action)
    v = (after[0] - before[0]) / DT
    assert v == pytest.approx(1.0, abs=0.05)
    costs = 0.005 * _clipped_sq(action) + 0.0005 * _contact_sq(env)
    assert reward == pytest.approx(direction * v - costs + 0.05, abs=1e-12)
    assert not terminated


def test_ant_goal_reward_is_l1_distance_to_the_goal():
    goal = np.array([-1.0, 2.5])
    env = AntGoal(robot="v5").make_env({"goal": goal})
    env.reset(seed=3)
    qpos = env.unwrapped.init_qpos.copy()
    qpos[:2] = [2.0, -1.0]  # torso placed at (2, -1)
    env.unwrapped.set_state(qpos, np.zeros(14))
    reward, terminated, _, after = _ant_step(env, np.zeros(8))
    np.testing.assert_allclose(after, [2.0, -1.0], atol=1e-3)
    expected = -np.abs(after - goal).sum() + 4.0 - 0.0005 * _contact_sq(env) + 0.05
    assert reward == pytest.approx(expected, abs=1e-12)
    assert reward == pytest.approx(-(3.0 + 3.5) + 4.05, abs=0.01)
    assert not terminated


@pytest.mark.parametrize(("height", "terminated"), [(1.5, True), (0.6, False)])
def test_ant_terminates_when_torso_height_leaves_range(height, terminated):
    env = AntVel(robot="v5").make_env({"velocity": 0.0})
    env.reset(seed=4)
    qpos = env.unwrapped.init_qpos.copy()
    qpos[2] = height
    env.unwrapped.set_state(qpos, np.zeros(14))
    action = np.full(8, 0.2)
    before = env.unwrapped.data.xpos[1, :2].copy()
    _, reward, done, truncated, _ = env.step(action)
    assert done is terminated and not truncated
    # The survive bonus is paid on the terminating step too (Finn et al.'s code).
    v = (env.unwrapped.data.xpos[1, 0] - before[0]) / DT
    costs = 0.005 * _clipped_sq(action) + 0.0005 * _contact_sq(env)
    assert reward == pytest.approx(-abs(v) + 1.0 - costs + 0.05, abs=1e-12)


def test_ant_health_is_torso_height_in_range_and_finite_state():
    qpos = np.zeros((6, 15))
    qpos[:, 2] = [0.19, 0.2, 0.6, 1.0, 1.01, 0.6]
    qvel = np.zeros((6, 14))
    qvel[5, 3] = np.nan
    np.testing.assert_array_equal(ANT.healthy(qpos, qvel), [False, True, True, True, False, False])
    assert HALF_CHEETAH.healthy(qpos[:, :9], qvel[:, :9]).all()


def test_halfcheetah_never_terminates_and_truncates_at_horizon():
    env = HalfCheetahVel(robot="v5", horizon=5).make_env({"velocity": 1.0})
    env.reset(seed=0)
    qpos, qvel = _cheetah_state(0.0)
    qpos[1] = 5.0  # far off the ground: an Ant would terminate, the cheetah does not
    env.unwrapped.set_state(qpos, qvel)
    flags = [env.step(np.zeros(6))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]


@pytest.mark.parametrize("name", NAMES)
def test_observation_is_gymnasium_v5_and_oracle_appends_the_task(name):
    family = make_family(name, horizon=10, robot="v5")
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    env = family.make_env(task)
    obs, info = env.reset(seed=5)
    assert obs.shape == env.observation_space.shape == (EXPECTED_OBS[name],)
    np.testing.assert_array_equal(obs, env.unwrapped._get_obs())  # Gymnasium's own observation
    obs, *_ = env.step(np.full(env.action_space.shape, 0.3))
    np.testing.assert_array_equal(obs, env.unwrapped._get_obs())

    oracle = make_family(name, horizon=10, oracle=True, robot="v5").make_env(task)
    oracle_obs, _ = oracle.reset(seed=5)
    key = family.task.key
    encoded = np.atleast_1d(np.asarray(task[key], dtype=np.float64))
    assert oracle_obs.shape == (EXPECTED_OBS[name] + len(encoded),) == oracle.observation_space.shape
    np.testing.assert_array_equal(oracle_obs[-len(encoded):], encoded)
    np.testing.assert_array_equal(oracle_obs[: -len(encoded)], env.reset(seed=5)[0])


# ---------------------------------------------------------------- batched == single envs


def test_batches_reuse_simulators_without_sharing_or_changing_numbers():
    import pickle

    family = AntVel(robot="v5", horizon=6)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    actions = np.random.default_rng(1).uniform(-1, 1, size=(6, 3, 8))

    def rollout(batch):
        out = [batch.reset(np.array([5, 6, 7]))]
        return out + [x for a in actions for x in batch.step(a)[:2]]

    first = family.make_batched(tasks)
    fresh = rollout(first)
    live = family.make_batched(tasks)  # while `first` is alive: its own simulators
    assert not {id(d) for d in first._data} & {id(d) for d in live._data}
    used = {id(d) for d in first._data}
    del first  # garbage-collected: its simulators go back to the pool
    reused = family.make_batched(tasks)
    assert {id(d) for d in reused._data} == used
    for a, b in zip(rollout(reused), fresh):  # a used simulator gives the numbers of a fresh one
        np.testing.assert_array_equal(a, b)
    reused.close()
    with pytest.raises(RuntimeError, match="reset"):
        reused.step(actions[0])
    with pytest.raises(RuntimeError, match="closed"):
        reused.reset()
    assert pickle.loads(pickle.dumps(family))._pool is None


def test_batched_reset_is_seeded_and_checks_shapes():
    family = HalfCheetahVel(robot="v5", horizon=5)
    batch = family.make_batched(family.sample_tasks(3, np.random.default_rng(0)))
    with pytest.raises(RuntimeError, match="reset"):
        batch.step(np.zeros((3, 6)))
    a = batch.reset(np.array([1, 2, 3]))
    np.testing.assert_array_equal(a, batch.reset(np.array([1, 2, 3])))
    assert not np.array_equal(a, batch.reset(np.array([1, 2, 4])))
    with pytest.raises(ValueError, match=r"\(3, 6\)"):
        batch.step(np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"seeds must have shape \(3,\)"):
        batch.reset(np.array([1, 2]))

