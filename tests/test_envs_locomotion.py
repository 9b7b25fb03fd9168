"""Tests for the MuJoCo locomotion task families (HalfCheetah and Ant, Finn et al. 2017)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import FAMILIES, AntDir, AntGoal, AntVel, BatchedTaskEnv, HalfCheetahDir, HalfCheetahVel, make_family
from envs.locomotion import ANT, HALF_CHEETAH, LOCOMOTION_FAMILIES, MissingDependencyError

pytest.importorskip("mujoco")
from envs import mujoco_robots  # noqa: E402

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
    env = HalfCheetahVel().make_env({"velocity": target})
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
    env = HalfCheetahDir().make_env({"direction": direction})
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
    env = AntVel().make_env({"velocity": 2.5})
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
    env = AntDir().make_env({"direction": direction})
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
    env = AntGoal().make_env({"goal": goal})
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
    env = AntVel().make_env({"velocity": 0.0})
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
    env = HalfCheetahVel(horizon=5).make_env({"velocity": 1.0})
    env.reset(seed=0)
    qpos, qvel = _cheetah_state(0.0)
    qpos[1] = 5.0  # far off the ground: an Ant would terminate, the cheetah does not
    env.unwrapped.set_state(qpos, qvel)
    flags = [env.step(np.zeros(6))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]


# ---------------------------------------------------------------- observations, tasks, registration


@pytest.mark.parametrize("name", NAMES)
def test_observation_is_gymnasium_v5_and_oracle_appends_the_task(name):
    family = make_family(name, horizon=10)
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    env = family.make_env(task)
    obs, info = env.reset(seed=5)
    assert obs.shape == env.observation_space.shape == (EXPECTED_OBS[name],)
    np.testing.assert_array_equal(obs, env.unwrapped._get_obs())  # Gymnasium's own observation
    obs, *_ = env.step(np.full(env.action_space.shape, 0.3))
    np.testing.assert_array_equal(obs, env.unwrapped._get_obs())

    oracle = make_family(name, horizon=10, oracle=True).make_env(task)
    oracle_obs, _ = oracle.reset(seed=5)
    key = family.task.key
    encoded = np.atleast_1d(np.asarray(task[key], dtype=np.float64))
    assert oracle_obs.shape == (EXPECTED_OBS[name] + len(encoded),) == oracle.observation_space.shape
    np.testing.assert_array_equal(oracle_obs[-len(encoded):], encoded)
    np.testing.assert_array_equal(oracle_obs[: -len(encoded)], env.reset(seed=5)[0])


@pytest.mark.parametrize("family_cls", LOCOMOTION_FAMILIES, ids=lambda f: f.name)
def test_registered_envs(family_cls):
    task = family_cls().sample_tasks(1, np.random.default_rng(1))[0]
    for env_id, oracle in ((family_cls.env_id, False), (family_cls.oracle_env_id(), True)):
        env = gym.make(env_id, task=task)
        assert env.spec is not None and env.spec.max_episode_steps == 200
        assert type(env.unwrapped).__name__ == family_cls.env_class and env.unwrapped.oracle is oracle
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert np.isfinite(reward) and obs.shape == env.observation_space.shape
        env.close()
    assert FAMILIES[family_cls.name] is family_cls


def test_set_task_and_reset_options():
    env = gym.make("metarl/HalfCheetahVel-v0")
    assert env.unwrapped.get_task() == {"velocity": 0.0}
    env.unwrapped.set_task({"velocity": 1.5})
    assert env.unwrapped.get_task() == {"velocity": 1.5}
    _, info = env.reset(seed=0, options={"task": {"velocity": 0.5}})
    assert info["task"] == {"velocity": 0.5} == env.unwrapped.get_task()
    env = gym.make("metarl/AntGoalOracle-v0", task={"goal": [1.0, -2.0]})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[-2:], [1.0, -2.0])
    obs, _ = env.reset(options={"task": {"goal": [0.5, 0.25]}})
    np.testing.assert_array_equal(obs[-2:], [0.5, 0.25])


@pytest.mark.parametrize(
    ("family_cls", "bad", "pattern"),
    [
        (HalfCheetahVel, {"velocity": float("nan")}, "velocity"),
        (HalfCheetahVel, {"speed": 1.0}, "velocity"),
        (HalfCheetahDir, {"direction": 0.5}, r"\+1 or -1"),
        (AntGoal, {"goal": [1.0]}, "goal"),
    ],
)
def test_bad_tasks_rejected(family_cls, bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        family_cls().make_env(bad)
    with pytest.raises(ValueError, match=pattern):
        family_cls().make_batched([bad])


@pytest.mark.parametrize("name", NAMES)
def test_tasks_reproducible_from_the_seed(name):
    family = make_family(name)
    a = family.sample_tasks(200, np.random.default_rng(11))
    b = family.sample_tasks(200, np.random.default_rng(11))
    c = family.sample_tasks(200, np.random.default_rng(12))
    values = lambda tasks: np.stack([np.atleast_1d(t[family.task.key]) for t in tasks])  # noqa: E731
    np.testing.assert_array_equal(values(a), values(b))
    assert not np.array_equal(values(a), values(c))


def test_task_distributions():
    rng = np.random.default_rng(0)
    velocities = np.array([t["velocity"] for t in HalfCheetahVel().sample_tasks(2000, rng)])
    assert velocities.min() >= 0 and velocities.max() < 2 and abs(velocities.mean() - 1.0) < 0.05
    velocities = np.array([t["velocity"] for t in AntVel().sample_tasks(2000, rng)])
    assert velocities.min() >= 0 and velocities.max() < 3 and abs(velocities.mean() - 1.5) < 0.08
    for family in (HalfCheetahDir(), AntDir()):
        directions = np.array([t["direction"] for t in family.sample_tasks(2000, rng)])
        assert set(directions) == {-1.0, 1.0} and abs(directions.mean()) < 0.07
    goals = np.stack([t["goal"] for t in AntGoal().sample_tasks(2000, rng)])
    assert goals.shape == (2000, 2) and goals.min() >= -3 and goals.max() < 3
    narrow = HalfCheetahVel(velocity_low=0.5, velocity_high=0.6).sample_tasks(50, rng)
    assert all(0.5 <= t["velocity"] < 0.6 for t in narrow)


# ---------------------------------------------------------------- batched == single envs


def _run_singles(family, tasks, seeds, actions, states):
    singles = [family.make_env(task) for task in tasks]
    n = len(tasks)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(singles, seeds)])
    for i, (qpos, qvel) in states.items():
        singles[i].unwrapped.set_state(qpos, qvel)
        obs[i] = singles[i].unwrapped._observation()
    done = np.zeros(n, dtype=bool)
    term, trunc = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    out = [obs.copy()]
    for action in actions:
        reward = np.zeros(n)
        for i, env in enumerate(singles):
            if done[i]:
                continue
            obs[i], reward[i], term[i], trunc[i], _ = env.step(action[i])
            done[i] = term[i] or trunc[i]
        out.append((obs.copy(), reward, term.copy(), trunc.copy()))
    return out


@pytest.mark.parametrize(("name", "oracle"), [(name, False) for name in NAMES] + [("ant_goal", True)])
def test_batched_equals_single_envs_step_for_step(name, oracle):
    horizon, n = 12, 4
    family = make_family(name, horizon=horizon, oracle=oracle)
    tasks = family.sample_tasks(n, np.random.default_rng(3))
    seeds = np.array([10, 11, 12, 13])
    rng = np.random.default_rng(4)
    actions = rng.normal(scale=1.2, size=(horizon + 3, n, *family.make_env().action_space.shape)).astype(np.float32)
    states = {}
    if family.robot.healthy_z_range is not None:  # copy 1 starts too high: it terminates at once
        qpos, qvel = family.make_env().init_qpos.copy(), np.zeros(14)
        qpos[2] = 1.3
        states = {1: (qpos, qvel)}
    expected = _run_singles(family, tasks, seeds, actions, states)

    batch = family.make_batched(tasks)
    assert isinstance(batch, mujoco_robots.MujocoBatch) and isinstance(batch, BatchedTaskEnv)
    assert batch.num_envs == n and batch.horizon == horizon
    obs = batch.reset(seeds)
    for i, (qpos, qvel) in states.items():
        obs[i] = batch.set_state(i, qpos, qvel)
    np.testing.assert_array_equal(obs, expected[0])
    assert obs.shape == (n, *batch.observation_space.shape)
    for action, (e_obs, e_rew, e_term, e_trunc) in zip(actions, expected[1:]):
        obs, rew, term, trunc = batch.step(action)
        np.testing.assert_array_equal(obs, e_obs)
        np.testing.assert_array_equal(rew, e_rew)
        np.testing.assert_array_equal(term, e_term)
        np.testing.assert_array_equal(trunc, e_trunc)
    assert np.all(term | trunc) and np.all(rew == 0.0)  # everyone frozen after the horizon
    if states:
        assert term[1] and not term[0]


def test_batches_reuse_simulators_without_sharing_or_changing_numbers():
    import pickle

    family = AntVel(horizon=6)
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
    family = HalfCheetahVel(horizon=5)
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


# ---------------------------------------------------------------- families: arguments and errors


@pytest.mark.parametrize(
    ("family_cls", "kwargs", "pattern"),
    [
        (HalfCheetahVel, {"horizon": 0}, "horizon"),
        (HalfCheetahVel, {"velocity_low": 2.0, "velocity_high": 1.0}, "velocity_low must be < velocity_high"),
        (AntGoal, {"goal_low": 1.0, "goal_high": 1.0}, "goal_low must be < goal_high"),
        (AntDir, {"oracle": "yes"}, "oracle must be true or false"),
    ],
)
def test_bad_family_arguments(family_cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        family_cls(**kwargs)


def test_horizon_is_configurable():
    family = AntDir(horizon=3)
    assert family.make_env().horizon == 3 and family.make_batched([{"direction": 1}]).horizon == 3


def test_missing_mujoco_gives_an_install_hint():
    code = """
import sys
sys.modules["mujoco"] = None  # as if MuJoCo were not installed
from envs import make_family, MissingDependencyError
from metarl.config import ConfigError, validate
make_family("navigation2d")
try:
    make_family("halfcheetah_vel")
except MissingDependencyError as error:
    assert isinstance(error, ImportError) and isinstance(error, ValueError)
    print(error)
try:
    validate({"env": {"family": "ant_goal"}})
except ConfigError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert 'pip install "gymnasium[mujoco]"' in lines[0]
    assert "env" in result.stdout and result.stdout.count('pip install "gymnasium[mujoco]"') == 2
    assert "Traceback" not in result.stderr


def test_mujoco_warnings_become_python_warnings_not_log_files(tmp_path, monkeypatch):
    import warnings

    import mujoco

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        HalfCheetahVel().make_env()  # MuJoCo 4 warns about 'settotalmass' in Gymnasium's half_cheetah.xml
        mujoco_robots.load_model(HalfCheetahVel.robot)
    assert all(w.category is mujoco_robots.MujocoWarning for w in caught if "MuJoCo" in str(w.message))
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    previous = mujoco.get_mju_user_warning()
    with mujoco_robots.mujoco_warnings_as_python_warnings():
        with pytest.warns(mujoco_robots.MujocoWarning, match="MuJoCo: something odd"):
            mujoco.get_mju_user_warning()("something odd")
    assert mujoco.get_mju_user_warning() is previous


def test_missing_dependency_error_is_an_import_and_value_error():
    assert issubclass(MissingDependencyError, ImportError) and issubclass(MissingDependencyError, ValueError)


# ---------------------------------------------------------------- configs and training


CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_loads(path):
    from metarl.config import load_config

    config = load_config(path)
    assert config.train.iterations >= 1 or path.name.endswith("-random.yaml")  # random baseline: untrained


def test_locomotion_configs_exist_for_every_family_and_method():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    stems = ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"]
    for stem in stems:
        assert {f"{stem}-maml.yaml", f"{stem}-fomaml.yaml", f"{stem}-hfmaml.yaml", f"ci/{stem}.yaml"} <= names


@pytest.mark.parametrize("stem", ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"])
def test_ci_config_meta_trains(stem):
    from metarl.config import load_config
    from metarl.trainer import MetaTrainer

    config = load_config(ROOT / "configs" / "ci" / f"{stem}.yaml")
    trainer = MetaTrainer(config)
    records = [trainer.step() for _ in range(config.train.iterations)]
    assert len(records) >= 2
    assert all(np.isfinite(r["return_pre"]) and np.isfinite(r["return_post"]) for r in records)
    assert all(not r["skipped"] for r in records) and records[-1]["env_steps"] > records[0]["env_steps"] > 0


def test_halfcheetah_vel_meta_training_through_the_trainer():
    """A few MAML iterations on HalfCheetahVel: finite numbers, the parameters move, same seed same numbers."""
    import torch

    from metarl.config import validate
    from metarl.trainer import MetaTrainer

    def run():
        config = validate({
            "seed": 5, "env": {"family": "halfcheetah_vel", "kwargs": {"horizon": 15}},
            "policy": {"hidden_sizes": [16, 16]},
            "meta": {"method": "maml", "batch_tasks": 3, "episodes_per_task": 2, "inner_lr": 1e-3},
            "train": {"iterations": 3},
        })
        trainer = MetaTrainer(config)
        start = {k: v.clone() for k, v in trainer.params.items()}
        records = [trainer.step() for _ in range(3)]
        return records, start, trainer.params

    records, start, params = run()
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert all(np.isfinite(r["meta_grad_norm"]) and r["meta_grad_norm"] > 0 for r in records)
    assert records[-1]["env_steps"] == 3 * 2 * 3 * 2 * 15  # iterations x phases x tasks x episodes x horizon
    assert any(not torch.equal(start[k], params[k]) for k in params)
    again, _, params_again = run()
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rs]  # noqa: E731
    assert strip(records) == strip(again)
    assert all(torch.equal(params[k], params_again[k]) for k in params)
