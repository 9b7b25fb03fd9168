"""Tests for ``envs.adapter``: any parameterised Gymnasium env as a task family, from config data."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import FAMILIES, EnvListBatch, GymParamsEnv, GymParamsFamily, make_family
from metarl.experiment.build import build_family
from metarl.experiment.config import ConfigError, validate

PENDULUM_G = {"env_id": "Pendulum-v1", "params": {"g": {"low": 8, "high": 12}}, "horizon": 50}


def _config(kwargs: dict) -> dict:
    return {"env": {"family": "gym_params", "kwargs": kwargs}}


# ---------------------------------------------------------------- building from a config


def test_pendulum_gravity_from_a_config():
    family = build_family(validate(_config(PENDULUM_G)))
    assert isinstance(family, GymParamsFamily) and FAMILIES["gym_params"] is GymParamsFamily
    assert family.horizon == 50
    tasks = family.sample_tasks(20, np.random.default_rng(0))
    gs = np.array([t["g"] for t in tasks])
    assert gs.min() >= 8 and gs.max() < 12 and len(set(gs)) == 20
    env = family.make_env(tasks[3])
    assert isinstance(env, GymParamsEnv) and env.unwrapped.g == tasks[3]["g"]
    assert env.spec is not None and env.spec.max_episode_steps == 50
    env.reset(seed=0)
    truncated = [env.step(np.zeros(1))[3] for _ in range(50)]
    assert truncated == [False] * 49 + [True]


def test_gravity_changes_the_dynamics():
    family = make_family(**{"name": "gym_params"}, **PENDULUM_G)

    def fall(g: float) -> float:
        env = family.make_env({"g": g})
        env.reset(seed=1)
        for _ in range(5):
            obs, *_ = env.step(np.zeros(1))
        return float(obs[2])  # angular velocity after 5 steps from the same start

    assert fall(8.0) != fall(12.0)
    assert fall(8.0) == fall(8.0)


def test_set_task_rebuilds_for_constructor_arguments_and_reset_options():
    family = make_family("gym_params", **PENDULUM_G)
    env = family.make_env()
    assert env.get_task() == {"g": 10.0} and env.unwrapped.g == 10.0  # default: the middle of the range
    inner = env.env
    env.set_task({"g": 9.0})
    assert env.unwrapped.g == 9.0 and env.env is not inner  # a constructor argument: rebuilt
    env.reset(seed=0, options={"task": {"g": 11.5}})
    assert env.unwrapped.g == 11.5 and env.get_task() == {"g": 11.5}
    with pytest.raises(ValueError, match=r"keys \['g'\]"):
        env.set_task({"gravity": 9.0})
    with pytest.raises(ValueError, match="shape"):
        env.set_task({"g": [9.0, 1.0]})


def test_attributes_set_in_place_without_rebuilding():
    family = make_family("gym_params", env_id="Pendulum-v1", horizon=20,
                         params={"m": {"distribution": "log_uniform", "low": 0.5, "high": 2.0, "attribute": "m"},
                                 "l": {"distribution": "choice", "values": [0.8, 1.2], "attribute": "l"}})
    task = family.sample_tasks(1, np.random.default_rng(3))[0]
    env = family.make_env(task)
    assert (env.unwrapped.m, env.unwrapped.l) == (task["m"], task["l"])
    inner = env.env
    env.set_task({"m": 1.5, "l": 0.8})
    assert env.env is inner and (env.unwrapped.m, env.unwrapped.l) == (1.5, 0.8)
    env.reset(seed=0)
    assert env.unwrapped.m == 1.5  # kept across reset


def test_mujoco_model_attributes_indexed_and_scaled():
    pytest.importorskip("mujoco")
    family = make_family(
        "gym_params", env_id="InvertedPendulum-v5", horizon=30,
        params={
            "gravity": {"low": -12.0, "high": -8.0, "attribute": "model.opt.gravity[2]"},
            "mass_scale": {"low": 0.5, "high": 1.5, "attribute": "model.body_mass", "scale": True},
            "friction": {"distribution": "normal", "mean": 1.0, "std": 0.1, "attribute": "model.geom_friction[0, 0]"},
        },
    )
    nominal_mass = gym.make("InvertedPendulum-v5").unwrapped.model.body_mass.copy()
    task = {"gravity": -9.0, "mass_scale": 1.25, "friction": 0.7}
    env = family.make_env(task)
    model = env.unwrapped.model
    np.testing.assert_array_equal(model.opt.gravity, [0.0, 0.0, -9.0])
    np.testing.assert_allclose(model.body_mass, 1.25 * nominal_mass)
    assert model.geom_friction[0, 0] == 0.7
    env.set_task({**task, "mass_scale": 0.5})  # scaled from the env's own value, not compounded
    np.testing.assert_allclose(env.unwrapped.model.body_mass, 0.5 * nominal_mass)
    env.reset(seed=0)
    assert env.unwrapped.model.opt.gravity[2] == -9.0


def test_vector_parameters_and_batched_env():
    family = make_family("gym_params", env_id="Pendulum-v1", horizon=8,
                         params={"g": {"low": 9, "high": 11},
                                 "m": {"distribution": "normal", "mean": 1.0, "std": 0.1, "attribute": "m"}})
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    batch = family.make_batched(tasks)
    assert isinstance(batch, EnvListBatch) and batch.num_envs == 3 and batch.horizon == 8
    obs = batch.reset(np.array([0, 1, 2]))
    singles = [family.make_env(t) for t in tasks]
    np.testing.assert_array_equal(obs, np.stack([e.reset(seed=s)[0] for s, e in enumerate(singles)]))
    actions = np.random.default_rng(1).uniform(-2, 2, size=(8, 3, 1)).astype(np.float32)
    for action in actions:
        obs, reward, _, truncated = batch.step(action)
        expected = [e.step(a) for e, a in zip(singles, action)]
        np.testing.assert_array_equal(obs, np.stack([x[0] for x in expected]))
        np.testing.assert_array_equal(reward, [x[1] for x in expected])
    assert truncated.all()


# ---------------------------------------------------------------- distributions and reproducibility


def test_distributions_and_reproducible_draws():
    family = make_family("gym_params", env_id="Pendulum-v1", params={
        "g": {"low": 8, "high": 12},
        "m": {"distribution": "log_uniform", "low": 0.1, "high": 10.0, "attribute": "m"},
        "l": {"distribution": "normal", "mean": 1.0, "std": 0.05, "attribute": "l"},
        "max_speed": {"distribution": "choice", "values": [6, 8, 10], "attribute": "max_speed"},
    })
    a = family.sample_tasks(3000, np.random.default_rng(5))
    b = family.sample_tasks(3000, np.random.default_rng(5))
    assert a == b and a != family.sample_tasks(3000, np.random.default_rng(6))
    m = np.array([t["m"] for t in a])
    assert m.min() >= 0.1 and m.max() < 10 and abs(np.log(m).mean()) < 0.1  # log-uniform: median 1
    l_ = np.array([t["l"] for t in a])
    assert abs(l_.mean() - 1.0) < 0.005 and abs(l_.std() - 0.05) < 0.005
    assert {t["max_speed"] for t in a} == {6.0, 8.0, 10.0}


def test_vector_parameter_on_a_whole_mujoco_field():
    pytest.importorskip("mujoco")
    family = make_family("gym_params", env_id="InvertedPendulum-v5", params={
        "gravity": {"low": [-1, -1, -12], "high": [1, 1, -8], "attribute": "model.opt.gravity"}})
    assert family.default_task()["gravity"].tolist() == [0.0, 0.0, -10.0]
    (task,) = family.sample_tasks(1, np.random.default_rng(0))
    assert task["gravity"].shape == (3,) and -12 <= task["gravity"][2] < -8
    np.testing.assert_array_equal(family.make_env(task).unwrapped.model.opt.gravity, task["gravity"])


# ---------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"env_id": "Pendulm-v1"},
         r"env_id = 'Pendulm-v1' is not a registered Gymnasium environment; did you mean Pendulum-v1"),
        ({"params": {"g": {"distribution": "gauss", "low": 8, "high": 12}}},
         r"params\.g\.distribution = 'gauss' is unknown; allowed: uniform, log_uniform, normal, choice"),
        ({"params": {"g": {"low": 12, "high": 8}}}, r"params\.g: low must be < high, got low=12, high=8"),
        ({"params": {"g": {"low": 8}}}, r"params\.g: a uniform distribution takes low, high; missing high"),
        ({"params": {"g": {"distribution": "normal", "mean": 10, "std": -1}}}, r"params\.g\.std must be > 0"),
        ({"params": {"g": {"distribution": "normal", "mean": 10, "std": 1, "low": 0}}},
         r"params\.g: a normal distribution takes mean, std; not low"),
        ({"params": {"g": {"distribution": "log_uniform", "low": 0, "high": 1}}}, r"params\.g\.low must be > 0"),
        ({"params": {"g": {"distribution": "choice", "values": []}}}, r"params\.g\.values must be a non-empty list"),
        ({"params": {"g": {"low": "a", "high": 2}}}, r"params\.g\.low must be a number"),
        ({"params": {"g": {"low": 8, "high": 12, "where": "g"}}}, r"params\.g: unknown field\(s\) where"),
        ({"params": {"g": {"low": 8, "high": 12, "attribute": "g", "kwarg": "g"}}},
         r"params\.g: give kwarg or attribute, not both"),
        ({"params": {"g": {"low": 8, "high": 12, "scale": True}}}, r"params\.g\.scale needs an attribute"),
        ({"params": {"gg": {"low": 8, "high": 12}}},
         r"Pendulum-v1 rejected a constructor argument \(params\.gg sets gg\).*unexpected keyword argument 'gg'"),
        ({"params": {"grav": {"low": 8, "high": 12, "attribute": "gravity"}}},
         r"params\.grav\.attribute = 'gravity' does not exist on PendulumEnv"),
        ({"params": {"g": {"low": 8, "high": 12, "attribute": "model..opt"}}},
         r"params\.g\.attribute = 'model\.\.opt' is not an attribute path"),
        ({"params": {"g": {"low": [8, 8], "high": [12, 12], "attribute": "g"}}},
         r"params\.g\.attribute = 'g' has shape \(\); the parameter's shape \(2,\) does not fit it"),
        ({"params": {}}, r"params must be a non-empty mapping"),
        ({"horizon": 0}, r"horizon must be an integer >= 1"),
        ({"env_kwargs": {"g": 9.0}}, r"env_kwargs and params both set constructor argument\(s\) g"),
    ],
)
def test_bad_specs_name_the_field(kwargs, pattern):
    spec = {**PENDULUM_G, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        GymParamsFamily(**spec)
    with pytest.raises(ConfigError, match=pattern):  # the same message through the config
        validate(_config(spec))


def test_missing_mujoco_attribute_names_the_field():
    pytest.importorskip("mujoco")
    spec = {"env_id": "InvertedPendulum-v5", "params": {"g": {"low": -12, "high": -8,
                                                              "attribute": "model.opt.gravty[2]"}}}
    with pytest.raises(ValueError, match=r"params\.g\.attribute = 'model\.opt\.gravty\[2\]' does not exist.*gravty"):
        GymParamsFamily(**spec)
    spec["params"]["g"]["attribute"] = "model.opt.gravity[7]"
    with pytest.raises(ValueError, match=r"gravity\[7\]' does not exist.*index 7"):
        GymParamsFamily(**spec)


# ---------------------------------------------------------------- training through metarl


def test_meta_training_on_an_adapted_family():
    from metarl.experiment.trainer import MetaTrainer

    config = validate({
        "seed": 2, "env": {"family": "gym_params", "kwargs": {**PENDULUM_G, "horizon": 10}},
        "policy": {"hidden_sizes": [8]},
        "meta": {"batch_tasks": 2, "episodes_per_task": 2, "inner_lr": 1e-4}, "train": {"iterations": 2},
    })
    trainer = MetaTrainer(config)
    records = [trainer.step() for _ in range(2)]
    assert all(np.isfinite(r["return_post"]) and not r["skipped"] for r in records)
    assert records[-1]["env_steps"] == 2 * 2 * 2 * 2 * 10
