"""The step-budget collection of Finn et al.'s code (:mod:`metarl.rl.sampling.step_budget`)."""

import json

import numpy as np
import pytest
import torch

import envs
from metarl.experiment.config import validate
from metarl.experiment.evaluation import evaluate, evaluation_path, save_evaluation
from metarl.experiment.trainer import MetaTrainer
from metarl.rl.oracles import PolicyGradientOracle
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampling import Episodes, VectorSampler
from metarl.rl.sampling.base import Sampler
from metarl.rl.sampling.step_budget import StepBudgetSampler, step_budget_selection


def simulate_vectorised_sampler(lengths: np.ndarray, budget: int) -> np.ndarray:
    """rllab's loop written out for one task: ``lengths[r, j]`` is environment j's r-th episode;
    every time step each environment steps, a finished episode is counted and the environment
    reset, and the loop ends after the first time step at which the counted steps reach the budget."""
    rounds, envs_ = lengths.shape
    keep = np.zeros_like(lengths, dtype=bool)
    current, elapsed, counted = np.zeros(envs_, int), np.zeros(envs_, int), 0
    while counted < budget:
        for j in range(envs_):
            elapsed[j] += 1
            if elapsed[j] == lengths[current[j], j]:
                counted += lengths[current[j], j]
                keep[current[j], j] = True
                current[j] += 1
                elapsed[j] = 0
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_selection_is_rllabs_vectorised_sampler(seed):
    rng = np.random.default_rng(seed)
    envs_, horizon = int(rng.integers(1, 8)), int(rng.integers(2, 12))
    rounds = 2 * horizon
    # a mix of episodes that end at the horizon and ones that end early, like navigation's
    lengths = np.where(rng.random((rounds, 5, envs_)) < 0.5, horizon, rng.integers(1, horizon + 1, (rounds, 5, envs_)))
    keep, settled = step_budget_selection(torch.as_tensor(lengths), envs_ * horizon)
    assert bool(settled.all())  # 2 * horizon rounds suffice when the budget is n horizons
    for b in range(5):
        expected = simulate_vectorised_sampler(lengths[:, b], envs_ * horizon)
        np.testing.assert_array_equal(keep[:, b].numpy(), expected)
        assert lengths[:, b][expected].sum() >= envs_ * horizon


def simulate_parallel_sampler(lengths: np.ndarray, budget: int) -> np.ndarray:
    """rllab's parallel collection (``stateful_pool._worker_run_collect``) written out for one task:
    ``lengths[r, j]`` is worker j's r-th episode; a worker starts an episode only while the counted
    steps are below the budget, adds its length when it ends, and stops once the budget is counted.
    Within a time step the workers act in order."""
    rounds, workers = lengths.shape
    keep = np.zeros_like(lengths, dtype=bool)
    current, elapsed, counted = np.zeros(workers, int), np.zeros(workers, int), 0
    running = np.ones(workers, bool)
    keep[0] = True  # every worker starts while nothing is counted
    while running.any():
        for j in np.flatnonzero(running):
            elapsed[j] += 1
            if elapsed[j] == lengths[current[j], j]:
                counted += lengths[current[j], j]
                current[j] += 1
                elapsed[j] = 0
                if counted >= budget:
                    running[j] = False
                else:
                    keep[current[j], j] = True
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_kept_running_selection_is_rllabs_parallel_sampler(seed):
    rng = np.random.default_rng(seed)
    workers, horizon, episodes = int(rng.integers(1, 9)), int(rng.integers(2, 12)), int(rng.integers(1, 6))
    budget = episodes * horizon
    rounds = budget + 1  # every episode lasts a step at least
    early = rng.integers(1, horizon + 1, (rounds, 5, workers))
    lengths = np.where(rng.random((rounds, 5, workers)) < 0.5, horizon, early)
    keep, settled = step_budget_selection(torch.as_tensor(lengths), budget, keep_running=True)
    assert bool(settled.all())
    for b in range(5):
        expected = simulate_parallel_sampler(lengths[:, b], budget)
        np.testing.assert_array_equal(keep[:, b].numpy(), expected)


@pytest.mark.parametrize("workers, kept", [(4, 23), (8, 27), (1, 20), (3, 22)])
def test_parallel_sampler_keeps_an_episode_per_other_worker_when_episodes_last_the_horizon(workers, kept):
    # Finn et al.'s HalfCheetah: 20 x 200 steps per task; tests ran 4 workers, training 8
    lengths = torch.full((21, 1, workers), 200)
    keep, settled = step_budget_selection(lengths, 20 * 200, keep_running=True)
    assert bool(settled.all()) and int(keep.sum()) == kept
    dropped, _ = step_budget_selection(torch.full((10, 1, 20), 200), 20 * 200)
    assert int(dropped.sum()) == 20  # the vectorised sampler: exactly the budget


@pytest.mark.parametrize("keep_running", [False, True])
def test_the_sampler_draws_rounds_enough_for_the_slowest_collection(keep_running):
    # environment 0 runs one-step episodes; environment 1 a 2-step episode, then ones of the horizon
    horizon, envs_, budget = 4, 2, 8
    family = envs.make_family("navigation2d", horizon=horizon)
    sampler = StepBudgetSampler(VectorSampler(family, GaussianMLPPolicy(2, 2, [8]), envs_, seed=0), horizon,
                                budget=budget, keep_running=keep_running)
    lengths = torch.tensor([[1, 2]] + [[1, horizon]] * (sampler.max_rounds - 1)).view(-1, 1, envs_)
    _, settled = step_budget_selection(lengths, budget, keep_running)
    assert bool(settled.all())
    _, settled = step_budget_selection(lengths[:budget // envs_ + 1], budget, keep_running)
    assert not bool(settled.all())  # a round per n completed steps and one more would not do


def test_selection_asks_for_more_rounds_until_every_environment_covers_the_stop():
    # environment 1 has finished a short episode and is running a long one when the budget is met:
    # with one round drawn, its second episode is unknown and could end before the stop
    lengths = torch.tensor([[[10, 2]]])
    keep, settled = step_budget_selection(lengths, 12)
    assert not bool(settled.any())
    keep, settled = step_budget_selection(torch.tensor([[[10, 2]], [[10, 10]]]), 20)
    assert bool(settled.all())
    # the stop is at step 12 (10 + 2 + 10 = 22 >= 20 counted); environment 0's second episode runs past it
    assert keep[:, 0].tolist() == [[True, True], [False, True]]


def test_without_early_ends_the_collection_is_the_first_round():
    family = envs.make_family("navigation2d", horizon=8)
    policy = GaussianMLPPolicy(2, 2, [8])
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    inner = VectorSampler(family, policy, 4, seed=1)
    far_away = [{"goal": np.array([50.0, 50.0])} for _ in tasks]  # never reached: every episode lasts 8 steps
    collected = StepBudgetSampler(inner, family.horizon).sample(far_away, policy.init_params(), (5,))
    first = inner.sample(far_away, policy.init_params(), (5, 0))
    assert collected.episodes_per_task == 4 and torch.equal(collected.rewards, first.rewards)


def test_collected_episodes_hold_the_budget_and_dropped_ones_are_absent():
    family = envs.make_family("navigation2d", horizon=20)
    policy = GaussianMLPPolicy(2, 2, [8])
    tasks = [{"goal": np.array([0.005, 0.0])}] * 2 + [{"goal": np.array([0.3, 0.0])}] * 2
    params = {k: torch.zeros_like(v) for k, v in policy.init_params().items()}  # mean action 0
    params["log_std"].fill_(np.log(0.05))  # moves of about 0.005: episodes near the goal end within it at random
    collected = StepBudgetSampler(VectorSampler(family, policy, 6, seed=2), family.horizon).sample(tasks, params, (1,))
    counts = collected.episode_counts()
    assert collected.episodes_per_task > 6 and bool((counts[:2] > 6).all()) and counts[2:].tolist() == [6, 6]
    steps = collected.mask.sum((0, 2))
    assert bool((steps >= 6 * 20).all())
    present = collected.mask[0].bool()
    assert bool((collected.rewards[:, ~present] == 0).all()) and bool((collected.mask[:, ~present] == 0).all())
    assert collected.task_mean_returns().tolist() == pytest.approx(
        [collected.episode_returns()[b][present[b]].mean().item() for b in range(4)])


class FixedSampler(Sampler):
    """Returns the same episodes whatever it is asked."""

    def __init__(self, episodes: Episodes, policy) -> None:
        self.episodes, self.policy = episodes, policy
        self.episodes_per_task, self.seed, self.dtype = episodes.episodes_per_task, 0, torch.float32

    def sample(self, tasks, params, key):
        return self.episodes


@pytest.mark.parametrize("surrogate,per_step_units", [("reinforce", False), ("reinforce", True), ("dice", False)])
def test_absent_episodes_change_no_surrogate(surrogate, per_step_units):
    family = envs.make_family("navigation2d", horizon=10)
    policy = GaussianMLPPolicy(2, 2, [8])
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    episodes = VectorSampler(family, policy, 4, seed=3).sample(tasks, policy.init_params(), (0,))
    absent = {name: torch.cat([value, torch.zeros_like(value[:, :, :3])], dim=2)
              for name, value in episodes.numpy().items() for value in [torch.from_numpy(value)]}
    padded = Episodes(**absent)
    assert (padded.episode_counts().tolist() == [4, 4, 4]
            and padded.mean_return() == pytest.approx(episodes.mean_return()))
    gradients = []
    for batch_episodes in (episodes, padded):
        oracle = PolicyGradientOracle(FixedSampler(batch_episodes, policy), tasks, surrogate=surrogate,
                                      per_step_units=per_step_units)
        params = {k: v.detach().unsqueeze(0).repeat(3, *[1] * v.dim()).requires_grad_()
                  for k, v in policy.init_params().items()}
        batch = oracle.sample(params)
        gradients.append(torch.autograd.grad(oracle.objective(params, batch), list(params.values())))
    for full, with_absent in zip(*gradients):
        torch.testing.assert_close(with_absent, full, rtol=1e-5, atol=1e-7)


def test_evaluation_with_the_step_protocol_is_saved_under_its_own_name(tmp_path):
    config = validate({"seed": 3, "meta": {"batch_tasks": 2, "episodes_per_task": 3, "inner_lr": 0.1},
                       "env": {"kwargs": {"horizon": 12}}, "policy": {"hidden_sizes": [16]},
                       "surrogate": {"per_step_units": True}, "evaluation": {"protocol": "steps"}})
    params = MetaTrainer(config).params
    result = evaluate(config, params, num_tasks=4, steps=1)
    assert result.protocol == "steps" and len(result.mean_return) == 2
    assert result == evaluate(config, params, num_tasks=4, steps=1)
    path = save_evaluation(result, tmp_path)
    assert path.name == "evaluation-4tasks-1steps-3episodes-seed20171-stepsprotocol.json"
    assert "workers" not in json.loads(path.read_text())  # files of the older protocols keep their fields
    with pytest.raises(ValueError, match="protocol"):
        validate({"evaluation": {"protocol": "samples"}})


def test_parallel_collection_keeps_the_episodes_under_way():
    family = envs.make_family("navigation2d", horizon=8)
    policy = GaussianMLPPolicy(2, 2, [8])
    far_away = [{"goal": np.array([50.0, 50.0])}] * 3  # never reached: every episode lasts 8 steps
    workers = VectorSampler(family, policy, 4, seed=1)
    collected = StepBudgetSampler(workers, family.horizon, budget=6 * 8, keep_running=True).sample(
        far_away, policy.init_params(), (5,))
    assert collected.episode_counts().tolist() == [9, 9, 9]  # 6 + the 3 other workers' episodes under way
    first_two = [workers.sample(far_away, policy.init_params(), (5, r)) for r in range(2)]
    assert torch.equal(collected.rewards[:, :, :4], first_two[0].rewards)  # round 0: every worker's first episode
    assert torch.equal(collected.rewards[:, :, 4:8], first_two[1].rewards)


def test_evaluation_with_the_workers_protocol_is_saved_under_its_own_name(tmp_path):
    config = validate({"seed": 3, "meta": {"batch_tasks": 2, "episodes_per_task": 3, "inner_lr": 0.1},
                       "env": {"kwargs": {"horizon": 12}}, "policy": {"hidden_sizes": [16]},
                       "surrogate": {"per_step_units": True}, "evaluation": {"protocol": "workers", "workers": 2}})
    params = MetaTrainer(config).params
    result = evaluate(config, params, num_tasks=4, steps=1)
    assert result.protocol == "workers" and result.workers == 2 and "on 2 workers" in result.describe()
    steps_config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"protocol": "steps"})})
    steps_result = evaluate(steps_config, params, num_tasks=4, steps=1)
    assert result.mean_return != steps_result.mean_return
    path = save_evaluation(result, tmp_path)
    assert path.name == "evaluation-4tasks-1steps-3episodes-seed20171-2workersprotocol.json"
    assert type(result).load(path) == result
    with pytest.raises(ValueError, match="number of workers"):
        evaluation_path(tmp_path, num_tasks=4, steps=1, episodes_per_task=3, seed=1, protocol="workers")
    with pytest.raises(ValueError, match="workers"):
        validate({"evaluation": {"protocol": "workers", "workers": 0}})
