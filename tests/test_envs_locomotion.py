"""Tests for the MuJoCo locomotion task families (HalfCheetah and Ant, Finn et al. 2017)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import FAMILIES, AntDir, AntGoal, AntVel, BatchedTaskEnv, HalfCheetahDir, HalfCheetahVel, make_family
from envs.locomotion import HALF_CHEETAH_V5, LOCOMOTION_FAMILIES, MissingDependencyError

pytest.importorskip("mujoco")
from envs import mujoco_robots, rllab_robots  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAMES = [family.name for family in LOCOMOTION_FAMILIES]


# ---------------------------------------------------------------- observations, tasks, registration


@pytest.mark.parametrize("family_cls", LOCOMOTION_FAMILIES, ids=lambda f: f.name)
def test_registered_envs(family_cls):
    task = family_cls().sample_tasks(1, np.random.default_rng(1))[0]
    for env_id, oracle in ((family_cls.env_id, False), (family_cls.oracle_env_id(), True)):
        for robot, env_type in (({}, rllab_robots.LocomotionEnv),
                                ({"robot": "v5"}, mujoco_robots.V5_ENVS[family_cls.name])):
            env = gym.make(env_id, task=task, **robot)
            assert env.spec is not None and env.spec.max_episode_steps == 200
            assert type(env.unwrapped) is env_type and env.unwrapped.oracle is oracle
            assert env.unwrapped.robot.variant == robot.get("robot", "rllab")
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


@pytest.mark.parametrize("family_cls", [HalfCheetahDir, AntDir])
def test_direction_families_draw_forward_with_the_given_probability(family_cls):
    def directions(family, seed, n=2000):
        return np.array([t["direction"] for t in family.sample_tasks(n, np.random.default_rng(seed))])

    # 0.8 forward: mean direction 0.6, standard error sqrt((1 - 0.6^2) / 2000) = 0.018; within 4 of them
    assert abs(directions(family_cls(forward_probability=0.8), 1).mean() - 0.6) < 4 * 0.018
    assert set(directions(family_cls(forward_probability=1.0), 2)) == {1.0}
    assert set(directions(family_cls(forward_probability=0), 3)) == {-1.0}
    # the default draws the tasks it drew before the option existed: one fair integer per task
    expected = 2.0 * np.random.default_rng(4).integers(0, 2, size=2000) - 1.0
    np.testing.assert_array_equal(directions(family_cls(), 4), expected)


# ---------------------------------------------------------------- batched == single envs


def _run_singles(family, tasks, seeds, actions, states):
    singles = [family.make_env(task) for task in tasks]
    n = len(tasks)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(singles, seeds)])
    for i, (qpos, qvel) in states.items():
        returned = singles[i].unwrapped.set_state(qpos, qvel)  # Gymnasium's v5 set_state returns nothing
        obs[i] = singles[i].unwrapped._observation() if returned is None else returned
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


@pytest.mark.parametrize("robot", ["rllab", "v5"])
@pytest.mark.parametrize(("name", "oracle"), [(name, False) for name in NAMES] + [("ant_goal", True)])
def test_batched_equals_single_envs_step_for_step(name, oracle, robot):
    horizon, n = 12, 4
    family = make_family(name, horizon=horizon, oracle=oracle, robot=robot)
    tasks = family.sample_tasks(n, np.random.default_rng(3))
    seeds = np.array([10, 11, 12, 13])
    action_dim = family.make_env().action_space.shape[0]
    actions = np.random.default_rng(4).normal(scale=1.2, size=(horizon + 3, n, action_dim)).astype(np.float32)
    states = {}
    if family.robot.healthy_z_range is not None:  # copy 1 starts too high: it terminates at once
        qpos = family.make_env().unwrapped.init_qpos.copy()
        qpos[2] = 1.3
        states = {1: (qpos, np.zeros(14))}
    expected = _run_singles(family, tasks, seeds, actions, states)
    batch = family.make_batched(tasks)
    assert isinstance(batch, BatchedTaskEnv) and batch.num_envs == n and batch.horizon == horizon
    assert isinstance(batch, rllab_robots.RllabBatch if robot == "rllab" else mujoco_robots.MujocoBatch)
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


# ---------------------------------------------------------------- families: arguments and errors


@pytest.mark.parametrize(
    ("family_cls", "kwargs", "pattern"),
    [
        (HalfCheetahVel, {"horizon": 0}, "horizon"),
        (HalfCheetahVel, {"velocity_low": 2.0, "velocity_high": 1.0}, "velocity_low must be < velocity_high"),
        (AntGoal, {"goal_low": 1.0, "goal_high": 1.0}, "goal_low must be < goal_high"),
        (AntDir, {"oracle": "yes"}, "oracle must be true or false"),
        (HalfCheetahDir, {"forward_probability": 1.5}, r"forward_probability must be in \[0, 1\]"),
        (AntDir, {"forward_probability": float("nan")}, "forward_probability must be a finite number"),
        (AntDir, {"forward_probability": True}, "forward_probability must be a finite number"),
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
from metarl.experiment.config import ConfigError, validate
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
        HalfCheetahVel(robot="v5").make_env()  # MuJoCo 4 warns about 'settotalmass' in Gymnasium's half_cheetah.xml
        mujoco_robots.load_model(HALF_CHEETAH_V5)
        HalfCheetahVel().make_env()
    assert all(w.category is mujoco_robots.MujocoWarning for w in caught if "MuJoCo" in str(w.message))
    assert not any("settotalmass" in str(w.message) for w in caught)  # benign, and would come from every worker
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    previous = mujoco.get_mju_user_warning()
    with mujoco_robots.mujoco_warnings_as_python_warnings():
        with pytest.warns(mujoco_robots.MujocoWarning, match="MuJoCo: something odd"):
            mujoco.get_mju_user_warning()("something odd")
    assert mujoco.get_mju_user_warning() is previous


def test_missing_dependency_error_is_an_import_and_value_error():
    assert issubclass(MissingDependencyError, ImportError) and issubclass(MissingDependencyError, ValueError)


# ---------------------------------------------------------------- configs and training


# Runnable configs: not the presets and overlays they are built from.
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "presets" and p.name != "tiny.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_loads(path):
    from metarl.experiment.config import load_config

    config = load_config(path)
    assert config.train.iterations >= 1 or path.name.endswith("-random.yaml")  # random baseline: untrained


def test_locomotion_configs_exist_for_every_family_and_method():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    stems = ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"]
    for stem in stems:
        assert {f"{stem}-maml.yaml", f"{stem}-fomaml.yaml", f"{stem}-hfmaml.yaml", f"ci/{stem}.yaml"} <= names


@pytest.mark.parametrize("stem", ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"])
def test_locomotion_configs_use_finn_et_als_trust_region_metric(stem):
    """MAML and HF-MAML measure the trust region through the inner step on all episodes, as Finn et al.'s
    code does; FO-MAML's direction ignores the inner step, and so does its metric (theirs stops the
    gradient through it)."""
    from metarl.experiment.config import load_config

    for method, metric, episodes in [("maml", "adapted", None), ("hfmaml", "adapted", None), ("fomaml", "post", 1)]:
        outer = load_config(ROOT / "configs" / f"{stem}-{method}.yaml").outer
        assert (outer.kind, outer.metric, outer.metric_episodes) == ("trpo", metric, episodes), method


@pytest.mark.parametrize("stem", ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"])
def test_ci_config_meta_trains(stem):
    from metarl.experiment.config import load_config
    from metarl.experiment.trainer import MetaTrainer

    config = load_config(ROOT / "configs" / "ci" / f"{stem}.yaml")
    trainer = MetaTrainer(config)
    records = [trainer.step() for _ in range(config.train.iterations)]
    assert len(records) >= 2
    assert all(np.isfinite(r["return_pre"]) and np.isfinite(r["return_post"]) for r in records)
    assert all(not r["skipped"] for r in records) and records[-1]["env_steps"] > records[0]["env_steps"] > 0


def test_halfcheetah_vel_meta_training_through_the_trainer():
    """A few MAML iterations on HalfCheetahVel: finite numbers, the parameters move, same seed same numbers."""
    import torch

    from metarl.experiment.config import validate
    from metarl.experiment.trainer import MetaTrainer

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


@pytest.mark.slow
@pytest.mark.parametrize("family, horizon", [("halfcheetah_dir", 15), ("ant_vel", 40)])
def test_training_collects_as_finn_et_als_parallel_sampler(family, horizon):
    """``meta.protocol: workers``: each task's batch holds the step budget, more with episodes
    under way kept (E + W - 1 episodes where episodes last the horizon); MAML with TRPO trains on it."""
    import torch

    from metarl.experiment.build import build_oracle
    from metarl.experiment.config import validate
    from metarl.experiment.trainer import MetaTrainer

    config = validate({
        "seed": 5, "env": {"family": family, "kwargs": {"horizon": horizon}}, "policy": {"hidden_sizes": [16]},
        "meta": {"method": "maml", "batch_tasks": 3, "episodes_per_task": 4, "inner_lr": 0.1,
                 "protocol": "workers", "workers": 3},
        "surrogate": {"kind": "reinforce", "discount_scores": False, "normalize_advantages": True,
                      "per_step_units": True},
        "outer": {"kind": "trpo", "max_kl": 0.01},
    })
    with MetaTrainer(config) as trainer:
        tasks = trainer.sample_tasks(0)
        oracle = build_oracle(config, trainer.sampler, tasks, (99,))
        batch = oracle.sample({k: v.unsqueeze(0).expand(3, *v.shape) for k, v in trainer.params.items()})
        steps = batch.episodes.mask.sum((0, 2))
        assert bool((steps >= 4 * horizon).all())  # the budget of 4 horizons per task
        if family == "halfcheetah_dir":  # never ends early
            assert batch.episodes.episode_counts().tolist() == [4 + 3 - 1] * 3
        before = {k: v.clone() for k, v in trainer.params.items()}
        records = [trainer.step() for _ in range(2)]
    assert all(np.isfinite(r["return_post"]) and not r["skipped"] for r in records)
    assert records[-1]["env_steps"] >= 2 * 2 * 3 * 4 * horizon
    assert any(not torch.equal(before[k], trainer.params[k]) for k in before)
