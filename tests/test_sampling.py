import numpy as np
import torch

import envs
from metarl.params import stack_params
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampling import VectorSampler


def make_sampler(episodes=3, seed=0):
    torch.manual_seed(0)
    family = envs.make_family("navigation2d", horizon=20)
    policy = GaussianMLPPolicy(2, 2, (16,))
    return family, policy, VectorSampler(family, policy, episodes, seed=seed)


def test_shapes_masks_and_rewards_match_the_environment():
    family, policy, sampler = make_sampler()
    tasks = [{"goal": np.array([0.3, -0.2])}, {"goal": np.array([-0.4, 0.1])}]
    episodes = sampler.sample(tasks, policy.init_params(), key=(0,))
    assert episodes.observations.shape == (20, 2, 3, 2)
    assert episodes.actions.shape == (20, 2, 3, 2)
    assert episodes.rewards.shape == episodes.mask.shape == episodes.log_probs.shape == (20, 2, 3)
    assert episodes.mask.sum() == 20 * 6 and episodes.num_steps == 120
    # Replay episode (task 1, episode 2) in a single env: same observations and rewards.
    env = family.make_env(tasks[1])
    obs, _ = env.reset()
    for t in range(20):
        np.testing.assert_allclose(episodes.observations[t, 1, 2].numpy(), obs, atol=1e-6)
        obs, reward, *_ = env.step(episodes.actions[t, 1, 2].numpy())
        assert abs(episodes.rewards[t, 1, 2].item() - reward) < 1e-5


def test_mask_ends_at_termination():
    family, policy, sampler = make_sampler()
    # A goal at the origin: the start is within 0.01 of it, and a policy moving less than
    # 0.01 - |goal| in the first step ends the episode at once; force it with tiny actions.
    params = policy.init_params()
    params = {k: torch.zeros_like(v) for k, v in params.items()}
    params["log_std"] = torch.full((2,), -20.0)
    episodes = sampler.sample([{"goal": np.array([0.001, 0.0])}], params, key=(0,))
    assert episodes.horizon == 1 and episodes.mask.sum() == 3


def test_same_key_same_episodes_and_keys_are_independent():
    family, policy, sampler = make_sampler()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    params = policy.init_params()
    a = sampler.sample(tasks, params, key=(5, 1))
    b = sampler.sample(tasks, params, key=(5, 1))
    c = sampler.sample(tasks, params, key=(5, 2))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)
    assert not torch.equal(a.actions, c.actions)
    # Episodes of task i depend only on (seed, key, i, e): a smaller batch reproduces them.
    d = sampler.sample(tasks[:2], params, key=(5, 1))
    assert torch.equal(d.actions, a.actions[:, :2])
    # Shared and task-batched parameters (equal values) give the same episodes, bit for bit: the
    # policy runs per task either way.
    e = sampler.sample(tasks, stack_params(params, 3), key=(5, 1))
    assert torch.equal(e.actions, a.actions) and torch.equal(e.log_probs, a.log_probs)
    _, _, other_seed = make_sampler(seed=1)
    assert not torch.equal(other_seed.sample(tasks, params, key=(5, 1)).actions, a.actions)


def test_rollouts_run_torch_on_one_thread_and_restore_the_thread_count(monkeypatch):
    """A multi-threaded matrix product may round differently from a single-threaded one (the workers
    of the other back-ends run one thread), so the in-process sampler runs one thread as well."""
    family, policy, sampler = make_sampler()
    seen = []
    actor = policy.actor

    def watched_actor(*args):
        step = actor(*args)
        return lambda *step_args: seen.append(torch.get_num_threads()) or step(*step_args)

    monkeypatch.setattr(policy, "actor", watched_actor)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sampler.sample(family.sample_tasks(2, np.random.default_rng(0)), policy.init_params(), key=(0,))
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
