"""Tests for the 2D navigation task family and the generic batching in ``envs``."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import (
    FAMILIES,
    BatchedTaskEnv,
    EnvListBatch,
    Navigation2D,
    Navigation2DBatch,
    Navigation2DEnv,
    TaskFamily,
    make_family,
)

ENVS_DIR = Path(envs.__file__).resolve().parent


def _task(x: float, y: float) -> dict:
    return {"goal": np.array([x, y])}


# ---------------------------------------------------------------- single env dynamics


def test_reset_starts_at_origin_with_spaces():
    env = Navigation2DEnv(_task(0.3, -0.2))
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2,)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    np.testing.assert_array_equal(info["goal"], [0.3, -0.2])
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_action_clipped_scaled_and_reward_after_move():
    env = Navigation2DEnv(_task(0.3, 0.4))
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.array([5.0, -7.0]))
    np.testing.assert_array_equal(obs, np.array([0.1, -0.1], dtype=np.float32))
    assert isinstance(reward, float)
    assert reward == pytest.approx(-np.hypot(0.1 - 0.3, -0.1 - 0.4), abs=1e-12)
    assert not terminated and not truncated
    np.testing.assert_array_equal(info["goal"], [0.3, 0.4])
    obs, reward, *_ = env.step(np.array([0.3, 0.4]))  # in range: not clipped, moves 0.1 x action
    np.testing.assert_allclose(obs, [0.13, -0.06], atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.13 - 0.3, -0.06 - 0.4), abs=1e-12)


def test_terminates_only_when_both_coordinates_close():
    env = Navigation2DEnv(_task(0.105, 0.0))
    env.reset()
    _, reward, terminated, _, _ = env.step(np.array([1.0, 0.0]))
    assert terminated and reward == pytest.approx(-0.005, abs=1e-12)

    env = Navigation2DEnv(_task(0.05, 0.02))  # x reached, y 0.02 away
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([0.5, 0.0]))
    assert not terminated

    env = Navigation2DEnv(_task(0.115, 0.0))  # x 0.015 away after a full step
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([1.0, 0.0]))
    assert not terminated


@pytest.mark.parametrize("maker", ["direct", "gym_make"])
def test_truncation_at_horizon(maker):
    if maker == "direct":
        env = Navigation2DEnv(_task(0.5, 0.5))
    else:
        env = gym.make("metarl/Navigation2D-v0", task=_task(0.5, 0.5))
    env.reset(seed=1)
    zero = np.zeros(2, dtype=np.float32)
    for _ in range(99):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated and not truncated
    _, reward, terminated, truncated, _ = env.step(zero)
    assert truncated and not terminated
    assert reward == pytest.approx(-np.hypot(0.5, 0.5))


def test_custom_horizon():
    env = Navigation2DEnv(_task(0.5, 0.5), horizon=3)
    env.reset()
    flags = [env.step(np.zeros(2))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_gym_make_episode_reaches_goal_and_default_goal():
    env = gym.make("metarl/Navigation2D-v0")
    assert env.spec is not None and env.spec.max_episode_steps == 100
    env.reset()
    np.testing.assert_array_equal(env.unwrapped.get_task()["goal"], [0.0, 0.0])
    env.reset(options={"task": _task(0.25, -0.15)})
    for _ in range(3):
        _, _, terminated, _, _ = env.step(np.array([1.0, -1.0]))
    # (0.3, -0.3) is not at the goal; two corrective steps reach (0.25, -0.15).
    assert not terminated
    env.step(np.array([-0.5, 1.0]))
    _, reward, terminated, _, _ = env.step(np.array([0.0, 0.5]))
    assert terminated and reward == pytest.approx(0.0, abs=1e-9)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        Navigation2DEnv().step(np.zeros(2))
    with pytest.raises(RuntimeError, match="reset"):
        Navigation2DBatch(np.zeros((2, 2))).step(np.zeros((2, 2)))


# ---------------------------------------------------------------- setting a task


def test_set_task_and_get_task():
    env = gym.make("metarl/Navigation2D-v0")
    env.unwrapped.set_task(_task(0.2, 0.1))
    goal = env.unwrapped.get_task()["goal"]
    np.testing.assert_array_equal(goal, [0.2, 0.1])
    goal[0] = 99.0  # get_task returns a copy
    np.testing.assert_array_equal(env.unwrapped.get_task()["goal"], [0.2, 0.1])
    env.reset()
    _, reward, *_ = env.step(np.zeros(2))
    assert reward == pytest.approx(-np.hypot(0.2, 0.1))


def test_reset_options_task():
    env = Navigation2DEnv(_task(0.2, 0.1))
    _, info = env.reset(options={"task": _task(-0.4, 0.3)})
    np.testing.assert_array_equal(info["goal"], [-0.4, 0.3])
    np.testing.assert_array_equal(env.get_task()["goal"], [-0.4, 0.3])
    _, reward, *_ = env.step(np.zeros(2))
    assert reward == pytest.approx(-0.5)
    env.reset()  # no options: task kept
    np.testing.assert_array_equal(env.get_task()["goal"], [-0.4, 0.3])


@pytest.mark.parametrize("bad", [{}, {"goal": [1.0]}, {"goal": [np.nan, 0.0]}, [0.1, 0.2]])
def test_bad_task_rejected(bad):
    with pytest.raises(ValueError, match="goal"):
        Navigation2DEnv().set_task(bad)


# ---------------------------------------------------------------- task sampling


def test_sample_tasks_reproducible_in_range_and_seed_dependent():
    family = Navigation2D()
    a = family.sample_tasks(50, np.random.default_rng(7))
    b = family.sample_tasks(50, np.random.default_rng(7))
    c = family.sample_tasks(50, np.random.default_rng(8))
    assert len(a) == 50
    goals_a = np.stack([t["goal"] for t in a])
    assert goals_a.shape == (50, 2)
    np.testing.assert_array_equal(goals_a, np.stack([t["goal"] for t in b]))
    assert not np.array_equal(goals_a, np.stack([t["goal"] for t in c]))
    assert goals_a.min() >= -0.5 and goals_a.max() < 0.5
    assert family.sample_tasks(0, np.random.default_rng(0)) == []

    narrow = Navigation2D(goal_low=0.2, goal_high=0.3).sample_tasks(100, np.random.default_rng(0))
    goals = np.stack([t["goal"] for t in narrow])
    assert goals.min() >= 0.2 and goals.max() < 0.3


# ---------------------------------------------------------------- batched == singles


def _rollout_singles(goals, horizon, action_seq):
    """Step one Navigation2DEnv per goal, freezing each copy once done (the batch contract)."""
    singles = [Navigation2DEnv({"goal": g}, horizon=horizon) for g in goals]
    obs = np.stack([e.reset(seed=i)[0] for i, e in enumerate(singles)])
    n = len(goals)
    term = np.zeros(n, dtype=bool)
    trunc = np.zeros(n, dtype=bool)
    out = []
    for actions in action_seq:
        rew = np.zeros(n)
        for i, env in enumerate(singles):
            if term[i] or trunc[i]:
                continue
            o, r, te, tr, _ = env.step(actions[i])
            obs[i], rew[i], term[i], trunc[i] = o, r, te, tr
        out.append((obs.copy(), rew, term.copy(), trunc.copy()))
    return out


def _mixed_actions(goals, horizon, extra, rng):
    """Homing actions for even copies (they terminate), random out-of-range ones for odd copies."""
    n = len(goals)
    pos = np.zeros((n, 2))
    seq = []
    for _ in range(horizon + extra):
        a = rng.normal(scale=2.0, size=(n, 2))  # often outside [-1, 1]
        a[::2] = (goals - pos)[::2] * 15.0 + rng.normal(scale=1e-2, size=a[::2].shape)
        pos = pos + 0.1 * np.clip(a, -1.0, 1.0)
        seq.append(a.astype(np.float32) if len(seq) % 2 else a)
    return seq


@pytest.mark.parametrize("horizon", [100, 15])
def test_batched_equals_single_envs(horizon):
    rng = np.random.default_rng(123)
    family = Navigation2D(horizon=horizon)
    tasks = family.sample_tasks(8, rng)
    goals = np.stack([t["goal"] for t in tasks])
    action_seq = _mixed_actions(goals, horizon, extra=5, rng=rng)

    batch = family.make_batched(tasks)
    assert isinstance(batch, Navigation2DBatch) and isinstance(batch, BatchedTaskEnv)
    assert batch.num_envs == 8 and batch.horizon == horizon
    obs0 = batch.reset(seeds=np.arange(8))
    assert obs0.dtype == np.float32 and obs0.shape == (8, 2)
    expected = _rollout_singles(goals, horizon, action_seq)

    saw_terminated = saw_truncated = False
    for actions, (e_obs, e_rew, e_term, e_trunc) in zip(action_seq, expected):
        obs, rew, term, trunc = batch.step(actions)
        assert obs.dtype == np.float32 and rew.shape == (8,) and term.dtype == bool and trunc.dtype == bool
        np.testing.assert_array_equal(obs, e_obs)
        np.testing.assert_array_equal(rew, e_rew)
        np.testing.assert_array_equal(term, e_term)
        np.testing.assert_array_equal(trunc, e_trunc)
        saw_terminated |= bool(term.any())
        saw_truncated |= bool(trunc.any())
    assert saw_terminated and saw_truncated
    # After horizon + 5 steps everyone is done: further steps change nothing and pay 0.
    done_obs, rew, term, trunc = batch.step(np.ones((8, 2)))
    np.testing.assert_array_equal(done_obs, expected[-1][0])
    np.testing.assert_array_equal(rew, np.zeros(8))
    assert np.all(term | trunc)


def test_env_list_batch_agrees_with_vectorised_batch():
    horizon = 20
    rng = np.random.default_rng(5)
    family = Navigation2D(horizon=horizon)
    tasks = family.sample_tasks(6, rng)
    goals = np.stack([t["goal"] for t in tasks])
    action_seq = _mixed_actions(goals, horizon, extra=3, rng=rng)

    vec = family.make_batched(tasks)
    generic = TaskFamily.make_batched(family, tasks)  # the base-class default
    assert isinstance(generic, EnvListBatch) and generic.horizon == horizon
    np.testing.assert_array_equal(vec.reset(np.arange(6)), generic.reset(np.arange(6)))
    for actions in action_seq:
        for a, b in zip(vec.step(actions), generic.step(actions)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_env_list_batch_truncation_sources():
    family = Navigation2D()
    far = [_task(0.5, 0.5)] * 2
    # EnvListBatch enforces its own horizon even if the envs would run longer ...
    batch = EnvListBatch([family.make_env(t, horizon=1000) for t in far], horizon=4)
    batch.reset(seeds=np.array([0, 1]))
    truncs = [batch.step(np.zeros((2, 2)))[3].copy() for _ in range(4)]
    assert [t.tolist() for t in truncs] == [[False, False]] * 3 + [[True, True]]
    # ... and honours an env's own truncated flag when it comes first.
    batch = EnvListBatch([family.make_env(far[0], horizon=2), family.make_env(far[1], horizon=10)], horizon=4)
    batch.reset()
    batch.step(np.zeros((2, 2)))
    obs, rew, _, trunc = batch.step(np.full((2, 2), 0.1))
    assert trunc.tolist() == [True, False]
    obs2, rew2, _, trunc2 = batch.step(np.full((2, 2), 0.1))
    np.testing.assert_array_equal(obs2[0], obs[0])
    assert rew2[0] == 0.0 and rew2[1] != 0.0 and trunc2.tolist() == [True, False]


# ---------------------------------------------------------------- registry and errors


def test_registry_and_make_family():
    assert FAMILIES["navigation2d"] is Navigation2D
    family = make_family("navigation2d", horizon=50, goal_low=-1.0, goal_high=1.0)
    assert isinstance(family, Navigation2D) and family.horizon == 50
    assert family.make_env(_task(0.1, 0.1)).horizon == 50
    importlib.reload(envs)  # registering twice must be safe
    assert "metarl/Navigation2D-v0" in gym.envs.registry


def test_unknown_family_lists_known_names():
    with pytest.raises(ValueError, match="navigation2d") as info:
        make_family("cheetah-velocity")
    assert "cheetah-velocity" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"horizon": 0}, r"horizon.*>= 1.*0"),
        ({"horizon": 2.5}, r"horizon.*integer.*2\.5"),
        ({"goal_low": 0.5, "goal_high": 0.5}, r"goal_low must be < goal_high.*0\.5"),
        ({"goal_low": 1.0, "goal_high": -1.0}, r"goal_low.*goal_high.*1\.0.*-1\.0"),
        ({"goal_low": float("nan")}, r"goal_low.*finite.*nan"),
    ],
)
def test_bad_family_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Navigation2D(**kwargs)


def test_bad_batch_and_sampling_arguments():
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        Navigation2DBatch(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="horizon"):
        Navigation2DBatch(np.zeros((3, 2)), horizon=-1)
    batch = Navigation2DBatch(np.zeros((3, 2)))
    batch.reset()
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        batch.step(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="n must be"):
        Navigation2D().sample_tasks(-1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        Navigation2D().sample_tasks(3, 0)
    with pytest.raises(ValueError, match="horizon"):
        EnvListBatch([Navigation2DEnv()], horizon=0)


# ---------------------------------------------------------------- layering


def test_envs_sources_do_not_import_torch_or_metarl():
    pattern = re.compile(r"^\s*(import|from)\s+(torch|metarl)\b", re.MULTILINE)
    files = sorted(ENVS_DIR.rglob("*.py"))
    assert files
    offenders = [str(f) for f in files if pattern.search(f.read_text())]
    assert offenders == []


def test_importing_envs_loads_neither_torch_nor_metarl():
    code = "import sys, envs; bad = {'torch', 'metarl'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ENVS_DIR.parent)


def test_oracle_variant_exposes_the_goal_and_batches_like_single_envs():
    from envs import make_family

    family = make_family("navigation2d", oracle=True, horizon=5)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    batch = family.make_batched(tasks)
    singles = [family.make_env(task) for task in tasks]
    assert batch.observation_space.shape == singles[0].observation_space.shape == (4,)
    obs = batch.reset()
    np.testing.assert_array_equal(obs[:, 2:], np.stack([t["goal"] for t in tasks]).astype(np.float32))
    for env, row in zip(singles, obs):
        np.testing.assert_array_equal(env.reset()[0], row)
    actions = np.full((3, 2), 0.05)
    batched = batch.step(actions)[0]
    for env, row in zip(singles, batched):
        np.testing.assert_array_equal(env.step(np.full(2, 0.05))[0], row)
    made = gym.make("metarl/Navigation2DOracle-v0")
    assert made.observation_space.shape == (4,)
    with pytest.raises(ValueError, match="oracle must be true or false"):
        make_family("navigation2d", oracle="yes")


def test_finn2017_task_set_is_the_authors_test_goals():
    family = envs.make_family("navigation2d")
    goals = np.array([task["goal"] for task in family.task_set("finn2017")])
    # test_maml_point.py: np.random.seed(1); np.random.uniform(-0.5, 0.5, size=(40, 2))
    assert goals.shape == (40, 2) and np.all(np.abs(goals) <= 0.5)
    np.testing.assert_allclose(goals[0], [0.417022 - 0.5, 0.72032449 - 0.5], atol=1e-6)
    np.testing.assert_array_equal(goals, np.array([t["goal"] for t in family.task_set("finn2017")]))
    with pytest.raises(ValueError, match=r"no task set 'finn2018' \(its task sets: finn2017\)"):
        family.task_set("finn2018")


def test_render_draws_the_goal_the_path_and_the_agent():
    from envs.navigation import RENDER_EXTENT, RENDER_SIZE

    def pixel(point):  # world (x, y) -> (row, column)
        scale = (RENDER_SIZE - 1) / (2 * RENDER_EXTENT)
        return round((RENDER_EXTENT - point[1]) * scale), round((point[0] + RENDER_EXTENT) * scale)

    env = Navigation2DEnv({"goal": np.array([0.3, -0.2])}, render_mode="rgb_array")
    env.reset()
    for _ in range(4):
        env.step(np.array([-1.0, 1.0]))
    image = env.render()
    assert image.shape == (RENDER_SIZE, RENDER_SIZE, 3) and image.dtype == np.uint8
    assert tuple(image[pixel((0.3, -0.2))]) == (214, 39, 40)  # goal
    assert tuple(image[pixel((-0.4, 0.4))]) == (31, 119, 180)  # the agent after four moves of (-0.1, 0.1)
    assert tuple(image[pixel((-0.2, 0.2))]) == (150, 150, 150)  # its path
    assert tuple(image[pixel((0.4, 0.4))]) == (255, 255, 255)
    assert Navigation2DEnv().render() is None
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array'"):
        Navigation2DEnv(render_mode="human")
