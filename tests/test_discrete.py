"""A discrete-action task family through the generic EnvListBatch: categorical policy, sampler, estimators."""

import gymnasium as gym
import numpy as np
import torch

from envs import TaskFamily
from metarl.estimators.meta_gradient import meta_gradient
from metarl.params import stack_params
from metarl.rl.oracles import PolicyGradientOracle
from metarl.rl.policies import CategoricalMLPPolicy
from metarl.rl.sampling import VectorSampler


class CartPoleLengths(TaskFamily):
    """CartPole whose pole half-length is the task (a family defined outside ``envs``)."""

    name = "cartpole-lengths"
    horizon = 30

    def sample_tasks(self, n, rng):
        return [{"length": float(x)} for x in rng.uniform(0.3, 0.8, n)]

    def make_env(self, task=None, **kwargs):
        env = gym.make("CartPole-v1")
        env.unwrapped.length = (task or {"length": 0.5})["length"]
        return env


def test_categorical_policy_meta_gradient_on_a_discrete_family():
    torch.manual_seed(0)
    family = CartPoleLengths()
    policy = CategoricalMLPPolicy(4, 2, (16,))
    sampler = VectorSampler(family, policy, episodes_per_task=3, seed=0)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    params = stack_params(policy.init_params(), 2)
    episodes = sampler.sample(tasks, params, key=(0,))
    assert episodes.actions.dtype == torch.int64 and set(episodes.actions.unique().tolist()) <= {0, 1}
    assert torch.all(episodes.rewards == episodes.mask)  # CartPole pays 1 per step taken
    again = sampler.sample(tasks, params, key=(0,))
    assert torch.equal(again.actions, episodes.actions) and torch.equal(again.mask, episodes.mask)
    for method in ("maml", "fomaml", "hfmaml"):
        oracle = PolicyGradientOracle(sampler, tasks, key=(1,))
        direction = meta_gradient(method, oracle, params, inner_lr=0.01)
        assert all(torch.isfinite(v).all() and v.shape == params[k].shape for k, v in direction.items())
