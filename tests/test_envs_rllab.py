"""Tests for the locomotion families' default robots: the environments Finn et al. ran (rllab's).

Rewards and observations are checked on hand-made states against the definitions of the authors'
code, computed here from a plain MuJoCo simulator as rllab computed them (body velocities from
``mj_objectVelocity``, weighted by mass); the batched env against the single env; every number against
the thread count and the sampler's chunking; and the returns of a zero-mean policy with std-1 noise
against what the definitions predict.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from envs import AntDir, AntGoal, AntVel, HalfCheetahDir, HalfCheetahVel, make_family
from envs.locomotion import ANT, HALF_CHEETAH, LOCOMOTION_FAMILIES

mujoco = pytest.importorskip("mujoco")
from envs import rllab_robots  # noqa: E402

NAMES = [family.name for family in LOCOMOTION_FAMILIES]
CLIPPED_NORMAL_SQ = 1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi)  # E[clip(e, -1, 1)^2], e ~ N(0, 1)


def _clipped_sq(action: np.ndarray) -> float:
    return float(np.sum(np.clip(action, -1.0, 1.0) ** 2))


def _reference_step(data: mujoco.MjData, model: mujoco.MjModel, action: np.ndarray) -> mujoco.MjData:
    """rllab's env step on a plain simulator: one mj_step with the clipped action, then mj_forward (and the
    contact forces, which MuJoCo 1.31's mj_forward computed)."""
    data.ctrl[:] = np.clip(action, -1.0, 1.0)
    mujoco.mj_step(model, data)
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    return data


def _robot_com(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Centre of mass of every body but the world's (the torso's subtree)."""
    mass = model.body_mass[1:]
    return (mass[:, None] * data.xipos[1:]).sum(0) / mass.sum()


def _robot_com_velocity(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """rllab's ``get_body_comvel("torso")``: the bodies' centre-of-mass velocities, weighted by mass."""
    momentum, velocity = np.zeros(3), np.zeros(6)
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        momentum += model.body_mass[body] * velocity[3:]
    return momentum / model.body_mass[1:].sum()


def _landed_ant(env, seed: int = 0) -> None:
    """Reset and let the Ant settle onto its legs, so that contact forces are non-zero."""
    env.reset(seed=seed)
    for _ in range(30):
        env.step(np.zeros(8))


# ---------------------------------------------------------------- the models


def test_models_are_the_authors():
    cheetah = HalfCheetahVel().make_env()
    assert cheetah.model.opt.timestep == 0.01 and cheetah.dt == 0.01  # one simulator step per env step
    assert cheetah.model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    ant = AntVel().make_env()
    model = ant.model
    assert model.opt.timestep == 0.02 and ant.dt == 0.02
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    np.testing.assert_array_equal(model.geom_solimp[:, :3], np.tile([0.8, 0.8, 0.01], (model.ngeom, 1)))
    np.testing.assert_array_equal(model.geom_solref, np.tile([0.02, 1.0], (model.ngeom, 1)))
    # rllab's motors (gear 1, range +/-150) behind its action normalisation are these (gear 150, range +/-1).
    np.testing.assert_array_equal(model.actuator_gear[:, 0] * model.actuator_ctrlrange[:, 1], np.full(8, 150.0))
    np.testing.assert_array_equal(rllab_robots.initial_qpos(ANT, model),
                                  [0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1])
    np.testing.assert_array_equal(rllab_robots.initial_qpos(HALF_CHEETAH, cheetah.model), np.zeros(9))


def test_reset_noise_is_rllabs():
    env = AntVel().make_env()
    init = rllab_robots.initial_qpos(ANT, env.model)
    qpos, qvel = [], []
    for seed in range(300):
        env.reset(seed=seed)
        data = env.unwrapped.get_data()
        qpos.append(data.qpos - init)
        qvel.append(data.qvel.copy())
    qpos, qvel = np.array(qpos), np.array(qvel)
    # std 0.01 and 0.1 within 4 standard errors of a standard deviation (sigma / sqrt(2n)) over all entries
    assert abs(qpos.std() - 0.01) < 4 * 0.01 / math.sqrt(2 * qpos.size)
    assert abs(qvel.std() - 0.1) < 4 * 0.1 / math.sqrt(2 * qvel.size)
    assert abs(qpos.mean()) < 4 * 0.01 / math.sqrt(qpos.size)


# ---------------------------------------------------------------- rewards and observations on hand-made states


@pytest.mark.parametrize(("target", "velocity"), [(1.2, 1.5), (0.3, -0.5)])
def test_halfcheetah_vel_reward_and_observation(target, velocity):
    env = HalfCheetahVel().make_env({"velocity": target})
    env.reset(seed=0)
    qvel = np.zeros(9)
    qvel[0] = velocity
    env.unwrapped.set_state(np.zeros(9), qvel)
    reference = env.unwrapped.get_data()
    action = np.array([0.5, -2.0, 0.1, 0.0, 3.0, -0.3])  # two coordinates beyond the bounds
    obs, reward, terminated, truncated, info = env.step(action)
    _reference_step(reference, env.unwrapped.model, action)
    v = _robot_com_velocity(env.unwrapped.model, reference)[0]
    assert v == pytest.approx(velocity, abs=0.3)  # the hand-made state really moves at about that speed
    assert reward == pytest.approx(-abs(v - target) - 0.05 * _clipped_sq(action), abs=1e-9)
    assert info["velocity"][0] == pytest.approx(v, abs=1e-9)
    expected_obs = np.concatenate([reference.qpos[1:], reference.qvel, _robot_com(env.unwrapped.model, reference)])
    np.testing.assert_allclose(obs, expected_obs, atol=1e-9)
    assert obs.shape == (20,) and not terminated and not truncated


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_halfcheetah_dir_reward(direction):
    env = HalfCheetahDir().make_env({"direction": direction})
    env.reset(seed=1)
    qvel = np.zeros(9)
    qvel[0] = 2.0
    env.unwrapped.set_state(np.zeros(9), qvel)
    reference = env.unwrapped.get_data()
    action = np.full(6, 0.4)
    _, reward, terminated, _, _ = env.step(action)
    v = _robot_com_velocity(env.unwrapped.model, _reference_step(reference, env.unwrapped.model, action))[0]
    assert v > 1.0
    assert reward == pytest.approx(direction * v - 0.05 * _clipped_sq(action), abs=1e-9)
    assert not terminated


def _ant_expectations(env, action):
    """The landed Ant stepped by the env and by the reference: (obs, reward, terminated) and the reference data."""
    reference = env.unwrapped.get_data()
    obs, reward, terminated, _, _ = env.step(action)
    model = env.unwrapped.model
    return (obs, reward, terminated), _reference_step(reference, model, action), model


def _ant_costs(data, action):
    contacts = np.clip(data.cfrc_ext, -1.0, 1.0)
    return 0.005 * _clipped_sq(action) + 0.0005 * float(np.sum(contacts**2)), float(np.sum(contacts**2))


def test_ant_vel_reward_and_observation_with_contacts():
    env = AntVel().make_env({"velocity": 2.5})
    _landed_ant(env)
    action = np.array([0.05, -0.05, 0.05, 0.0, 0.05, -0.05, 0.05, 1.2])  # the last one beyond the bounds
    (obs, reward, terminated), reference, model = _ant_expectations(env, action)
    v = _robot_com_velocity(model, reference)[0]
    costs, contact_sq = _ant_costs(reference, action)
    assert contact_sq > 0
    assert reward == pytest.approx(-abs(v - 2.5) + 1.0 - costs + 0.05, abs=1e-9)
    expected_obs = np.concatenate([
        reference.qpos, reference.qvel, np.clip(reference.cfrc_ext, -1, 1).ravel(), reference.xmat[1],
        _robot_com(model, reference),
    ])
    np.testing.assert_allclose(obs, expected_obs, atol=1e-9)
    assert obs.shape == (125,) and not terminated


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_ant_dir_reward(direction):
    env = AntDir().make_env({"direction": direction})
    _landed_ant(env, seed=2)
    data = env.unwrapped.get_data()
    qvel = data.qvel.copy()
    qvel[0] = 1.0  # torso pushed forward at 1 m/s
    env.unwrapped.set_state(data.qpos, qvel)
    action = np.linspace(-1, 1, 8)
    (_, reward, terminated), reference, model = _ant_expectations(env, action)
    v = _robot_com_velocity(model, reference)[0]
    assert v > 0.3
    assert reward == pytest.approx(direction * v - _ant_costs(reference, action)[0] + 0.05, abs=1e-9)
    assert not terminated


def test_ant_goal_reward_is_l1_distance_of_the_centre_of_mass():
    goal = np.array([-1.0, 2.5])
    env = AntGoal().make_env({"goal": goal})
    _landed_ant(env, seed=3)
    data = env.unwrapped.get_data()
    qpos = data.qpos.copy()
    qpos[:2] = [2.0, -1.0]  # torso moved to (2, -1)
    env.unwrapped.set_state(qpos, data.qvel)
    action = np.zeros(8)
    (_, reward, terminated), reference, model = _ant_expectations(env, action)
    com = _robot_com(model, reference)[:2]
    np.testing.assert_allclose(com, [2.0, -1.0], atol=0.1)
    assert reward == pytest.approx(-np.abs(com - goal).sum() + 4.0 - _ant_costs(reference, action)[0] + 0.05,
                                   abs=1e-9)
    assert not terminated


@pytest.mark.parametrize(("height", "terminated"), [(1.5, True), (0.1, True), (0.55, False)])
def test_ant_terminates_when_torso_height_leaves_range(height, terminated):
    env = AntVel().make_env({"velocity": 0.0})
    env.reset(seed=4)
    qpos = rllab_robots.initial_qpos(ANT, env.unwrapped.model)
    qpos[2] = height
    env.unwrapped.set_state(qpos, np.zeros(14))
    reference = env.unwrapped.get_data()
    action = np.full(8, 0.2)
    _, reward, done, truncated, _ = env.step(action)
    _reference_step(reference, env.unwrapped.model, action)
    assert done is terminated and not truncated
    # The survive bonus is paid on the terminating step too (the authors' code).
    v = _robot_com_velocity(env.unwrapped.model, reference)[0]
    assert reward == pytest.approx(-abs(v) + 1.0 - _ant_costs(reference, action)[0] + 0.05, abs=1e-9)


def test_halfcheetah_never_terminates_and_truncates_at_horizon():
    env = HalfCheetahVel(horizon=5).make_env({"velocity": 1.0})
    env.reset(seed=0)
    qpos = np.zeros(9)
    qpos[1] = 5.0  # far off the ground: an Ant would terminate, the cheetah does not
    env.unwrapped.set_state(qpos, np.zeros(9))
    flags = [env.step(np.zeros(6))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]


@pytest.mark.parametrize("name", NAMES)
def test_oracle_appends_the_task(name):
    family = make_family(name, horizon=10)
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    obs, _ = family.make_env(task).reset(seed=5)
    oracle = make_family(name, horizon=10, oracle=True).make_env(task)
    oracle_obs, info = oracle.reset(seed=5)
    encoded = np.atleast_1d(np.asarray(task[family.task.key], dtype=np.float64))
    assert oracle_obs.shape == (len(obs) + len(encoded),) == oracle.observation_space.shape
    assert len(obs) == (20 if name.startswith("halfcheetah") else 125)
    np.testing.assert_array_equal(oracle_obs, np.concatenate([obs, encoded]))
    assert info["task"][family.task.key] == pytest.approx(task[family.task.key])


# ---------------------------------------------------------------- a zero-mean policy against the definitions


def _zero_policy_returns(family, tasks, episodes):
    from metarl.rl.policies import GaussianMLPPolicy
    from metarl.rl.sampling import VectorSampler

    env = family.make_env()
    policy = GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (8,), "relu", init_std=1.0)
    params = {k: torch.zeros_like(v) if k.startswith("mean_net") else v for k, v in policy.init_params().items()}
    batch = VectorSampler(family, policy, episodes, seed=0).sample(tasks, params, key=(0,))
    return batch.episode_returns().numpy().ravel(), batch.mask.sum(0).numpy().ravel()


@pytest.mark.slow
def test_zero_policy_scores_what_the_definitions_predict():
    """Mean action zero, std-1 noise, as many forward as backward tasks: the running term averages out,
    leaving the control cost of clipped standard normal actions (and, for the Ant, its survive bonus less
    a contact cost between 0 and 0.0005 x 84 per step)."""
    tasks = [{"direction": 1.0}, {"direction": -1.0}] * 10
    returns, _ = _zero_policy_returns(HalfCheetahDir(), tasks, 10)
    predicted = -200 * 0.05 * 6 * CLIPPED_NORMAL_SQ  # -30.96
    assert abs(returns.mean() - predicted) < 4 * returns.std() / math.sqrt(returns.size)
    returns, lengths = _zero_policy_returns(AntDir(), tasks, 10)
    per_step = 0.05 - 0.005 * 8 * CLIPPED_NORMAL_SQ
    error = 4 * returns.std() / math.sqrt(returns.size)
    assert lengths.mean() * (per_step - 0.0005 * 84) - error < returns.mean() < lengths.mean() * per_step + error


# ---------------------------------------------------------------- batched, threads, chunks


@pytest.mark.slow
@pytest.mark.parametrize("name", ["halfcheetah_vel", "ant_vel"])
def test_same_episodes_with_any_thread_count_and_chunking(name):
    from metarl.rl.policies import GaussianMLPPolicy
    from metarl.rl.sampling import VectorSampler

    def sample(threads, batch_size):
        family = make_family(name, horizon=25 if name == "halfcheetah_vel" else 60, threads=threads)
        family.preferred_batch_size = batch_size
        env = family.make_env()
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (16,), "relu")
        tasks = family.sample_tasks(5, np.random.default_rng(1))
        return VectorSampler(family, policy, 3, seed=2).sample(tasks, policy.init_params(), key=(4,))

    reference = sample(1, None)
    if name == "ant_vel":
        assert 0 < reference.num_steps < 5 * 3 * 60  # some episodes end early: chunks of different lengths
    for threads, batch_size in ((2, None), (2, 4), (1, 7), (0, 3)):
        other = sample(threads, batch_size)
        for field in ("observations", "actions", "rewards", "mask", "log_probs"):
            assert torch.equal(getattr(reference, field), getattr(other, field)), (threads, batch_size, field)


def test_batches_are_reused_and_a_closed_env_refuses_to_step():
    family = HalfCheetahVel(horizon=4)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    first = family.make_batched(tasks)
    fresh = [first.reset(np.array([5, 6, 7]))] + [first.step(np.full((3, 6), 0.3))[0] for _ in range(4)]
    batch = first._batch
    first.close()
    with pytest.raises(RuntimeError, match="reset"):
        first.step(np.zeros((3, 6)))
    with pytest.raises(RuntimeError, match="closed"):
        first.reset()
    reused = family.make_batched(tasks[:2])  # a smaller env takes the given-back batch
    assert reused._batch is batch
    again = [reused.reset(np.array([5, 6]))] + [reused.step(np.full((2, 6), 0.3))[0] for _ in range(4)]
    for a, b in zip(again, fresh):
        np.testing.assert_array_equal(a, b[:2])
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 6\)"):
        reused.step(np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"seeds must have shape \(2,\)"):
        reused.reset(np.array([1, 2, 3]))


# ---------------------------------------------------------------- task sets and arguments


@pytest.mark.parametrize(("family_cls", "seed", "high"), [(HalfCheetahVel, 1, 2.0), (AntVel, 1, 3.0)])
def test_finn2017_velocities_are_the_test_scripts_draws(family_cls, seed, high):
    tasks = family_cls().task_set("finn2017")
    np.random.seed(seed)
    draws = np.random.uniform(0.0, high, size=(40,))  # as maml_examples/test_maml_*.py draw them
    np.testing.assert_array_equal([t["velocity"] for t in tasks], draws)


@pytest.mark.parametrize(("family_cls", "seed", "backward"), [(HalfCheetahDir, 1, 22), (AntDir, 2, 20)])
def test_finn2017_directions_are_the_test_scripts_draws(family_cls, seed, backward):
    tasks = family_cls().task_set("finn2017")
    np.random.seed(seed)
    draws = np.random.uniform(0.1, 0.8, size=(40,))  # examples/test_vpg_*_direc.py at cbfinn/maml_rl 4d41869
    np.testing.assert_array_equal([t["direction"] for t in tasks], np.where(draws < 0.4, -1.0, 1.0))
    assert sum(t["direction"] == -1.0 for t in tasks) == backward


def test_finn2017_directions_against_the_july_scripts_draws():
    """On seed 1 the July test script's U[0, 2] split at 1 puts the same tasks backward (so the
    HalfCheetahDir pages keep their tasks); on the Ant's seed 2 it puts 5 more backward, tasks that
    every AntDir result file scores as forward ones."""
    july = {seed: np.where(np.random.RandomState(seed).uniform(0.0, high, size=40) < high / 2, -1.0, 1.0)
            for seed, high in ((1, 2.0), (2, 3.0))}
    np.testing.assert_array_equal([t["direction"] for t in HalfCheetahDir().task_set("finn2017")], july[1])
    ours = np.array([t["direction"] for t in AntDir().task_set("finn2017")])
    differ = ours != july[2]
    assert differ.sum() == 5 and set(ours[differ]) == {1.0} and set(july[2][differ]) == {-1.0}


def test_direction_draws_must_straddle_the_threshold():
    with pytest.raises(ValueError, match="must straddle 0.4"):
        AntDir().task.from_draws(np.array([1.0, 2.0]), 0.0, 0.3)


def test_ant_goal_has_no_published_test_set():
    family = AntGoal()
    assert family.task_sets == ()
    with pytest.raises(ValueError, match="no task set 'finn2017'"):
        family.task_set("finn2017")


@pytest.mark.parametrize(("kwargs", "pattern"), [({"robot": "mujoco"}, "robot must be one of 'rllab', 'v5'"),
                                                 ({"threads": -1}, "threads must be an integer >= 0")])
def test_bad_robot_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        HalfCheetahVel(**kwargs)


@pytest.mark.slow
def test_render_gives_an_image_or_says_what_is_missing():
    env = HalfCheetahVel().make_env(render_mode="rgb_array")
    env.reset(seed=0)
    try:
        image = env.render()
    except RuntimeError as error:
        assert "MUJOCO_GL" in str(error)
        pytest.skip(f"no OpenGL back-end here: {error}")
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8 and image.std() > 0
    env.close()


@pytest.mark.slow
def test_subprocess_workers_give_the_in_process_episodes_bit_for_bit():
    """Workers cut the call at pairs, inside tasks; three episodes per task leave the Ant's task blocks
    of observations off 16-byte boundaries unless the sampler aligns them."""
    from metarl.experiment.build import build_family, build_policy, build_sampler
    from metarl.experiment.config import validate

    def sample(kind):
        config = validate({"env": {"family": "ant_vel", "kwargs": {"horizon": 80}}, "policy": {"hidden_sizes": [16]},
                           "sampler": {"kind": kind, "workers": 2}})
        family = build_family(config)
        policy = build_policy(config, family)
        tasks = family.sample_tasks(5, np.random.default_rng(1))
        with build_sampler(config, family, policy, seed=3, episodes_per_task=3) as sampler:
            return sampler.sample(tasks, policy.init_params(), key=(2,))

    vector, workers = sample("vector"), sample("subprocess")
    assert 0 < vector.num_steps < 5 * 3 * 80  # some episodes end early
    for field in ("observations", "actions", "rewards", "mask", "log_probs"):
        assert torch.equal(getattr(vector, field), getattr(workers, field)), field
