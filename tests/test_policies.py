import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy


def stacked(params, n, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: v.unsqueeze(0) + scale * torch.randn((n, *v.shape), generator=gen, dtype=v.dtype)
            for k, v in params.items()}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_task_batched_forward_equals_vmap_of_functional_call(activation):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (16, 8), activation)
    params = stacked(policy.init_params(), 4)
    obs = torch.randn(4, 5, 7, 3)
    mean, log_std = policy.forward_with(params, obs)
    ref_mean, ref_log_std = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(log_std, ref_log_std)
    assert policy.is_task_batched(params) and not policy.is_task_batched(policy.init_params())


@pytest.mark.parametrize("policy",
                         [GaussianMLPPolicy(3, 2, (16, 8), "tanh"), CategoricalMLPPolicy(3, 4, (16,), "relu")],
                         ids=["gaussian", "categorical"])
@pytest.mark.parametrize("task_batched", [True, False])
def test_a_rollout_actor_returns_exactly_what_act_returns(policy, task_batched):
    """The sampler's per-step ``actor`` (prepared once per rollout) and ``act`` agree bit for bit."""
    torch.manual_seed(2)
    params = stacked(policy.init_params(), 4) if task_batched else policy.init_params()
    steps, shape = 6, (4, 5, policy.action_dim if isinstance(policy, GaussianMLPPolicy) else policy.num_actions)
    noise = torch.randn(steps, *shape) if isinstance(policy, GaussianMLPPolicy) else torch.rand(steps, *shape)
    act = policy.actor(params, noise)
    for t in range(steps):
        obs = torch.randn(4, 5, 3)
        for got, expected in zip(act(t, obs), policy.act(params, obs, noise[t])):
            assert torch.equal(got, expected)


def test_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(2, 3, (8,), init_std=0.5).double()
    params = policy.init_params()
    obs, actions = torch.randn(10, 2, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    mean, log_std = policy.forward_with(params, obs)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(policy.log_prob(params, obs, actions), expected)
    assert torch.allclose(params["log_std"], torch.full((3,), math.log(0.5), dtype=torch.float64))


def test_act_returns_the_log_prob_of_its_action():
    torch.manual_seed(2)
    policy = GaussianMLPPolicy(2, 2, (8,)).double()
    params = stacked(policy.init_params(), 3)
    obs, noise = torch.randn(3, 6, 2, dtype=torch.float64), torch.randn(3, 6, 2, dtype=torch.float64)
    actions, log_probs = policy.act(params, obs, noise)
    torch.testing.assert_close(log_probs, policy.log_prob(params, obs, actions))


def test_categorical_policy_samples_from_its_distribution_and_log_probs_match():
    torch.manual_seed(3)
    policy = CategoricalMLPPolicy(2, 3, (8,)).double()
    params = policy.init_params()
    obs = torch.randn(1, 2, dtype=torch.float64).expand(20000, 2)
    noise = torch.from_numpy(policy.draw_noise(np.random.default_rng(0), 20000)).double()
    actions, log_probs = policy.act(params, obs, noise)
    torch.testing.assert_close(log_probs, policy.log_prob(params, obs, actions))
    probs = policy.forward_with(params, obs[:1])[0].exp()[0]
    freq = torch.bincount(actions, minlength=3).double() / 20000
    stderr = (probs * (1 - probs) / 20000).sqrt()
    assert ((freq - probs).abs() < 4 * stderr).all()


def test_kl_is_zero_for_equal_params_and_positive_otherwise():
    torch.manual_seed(4)
    for policy in (GaussianMLPPolicy(2, 2, (8,)), CategoricalMLPPolicy(2, 4, (8,))):
        params = policy.init_params()
        other = {k: v + 0.3 * torch.randn_like(v) for k, v in params.items()}
        obs = torch.randn(5, 2)
        assert torch.allclose(policy.kl(params, params, obs), torch.zeros(5), atol=1e-6)
        assert (policy.kl(params, other, obs) > 0).all()


def test_xavier_init_has_zero_biases_and_a_homogeneous_relu_network():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (64, 64), "relu")  # the default: weight_init="xavier"
    linears = [m for m in policy.mean_net if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    bound = math.sqrt(6 / (64 + 64))  # Xavier-uniform bound of the middle layer
    assert linears[1].weight.abs().max() <= bound and linears[1].weight.abs().max() > 0.9 * bound
    obs = torch.randn(10, 2)
    mean, _ = policy(obs)
    torch.testing.assert_close(policy(3.0 * obs)[0], 3.0 * mean)  # f(c x) = c f(x), c > 0


def test_small_output_init_starts_with_near_zero_actions():
    torch.manual_seed(0)
    small = GaussianMLPPolicy(2, 2, (64, 64), "relu", weight_init="small_output")
    torch.manual_seed(0)
    xavier = GaussianMLPPolicy(2, 2, (64, 64), "relu")
    obs = torch.randn(100, 2)
    assert small(obs)[0].abs().max() < 0.05 < xavier(obs)[0].abs().max()
    assert torch.equal(small.mean_net[-1].bias, torch.zeros(2))


def test_unknown_weight_init_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="weight_init must be one of .*xavier.*small_output.*'orthogonal'"):
        GaussianMLPPolicy(2, 2, (8,), "relu", weight_init="orthogonal")
