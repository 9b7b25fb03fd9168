"""Surrogates at theta = theta_b: same gradient (discount convention: step t weighted by gamma^t)."""

import numpy as np
import pytest
import torch

import envs
from metarl.params import stack_params
from metarl.rl.oracles import PolicyGradientOracle, episode_log_probs
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.returns import discounted_returns
from metarl.rl.sampling import VectorSampler
from metarl.rl.surrogates import SURROGATES

GAMMA = 0.95


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    family = envs.make_family("navigation2d", horizon=15)
    policy = GaussianMLPPolicy(2, 2, (16,)).double()
    sampler = VectorSampler(family, policy, 4, seed=3, dtype=torch.float64)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    params = stack_params(policy.init_params(), 3)
    oracle = PolicyGradientOracle(sampler, tasks, gamma=GAMMA, gae_lambda=1.0)
    return policy, oracle, params, oracle.sample(params)


def gradient(value, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, list(params.values()))])


def test_three_surrogates_give_the_policy_gradient_at_the_behaviour_params(setting):
    policy, oracle, params, batch = setting
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    episodes = batch.episodes
    # Reference: sum_t gamma^t grad l_t (R_t - b_t), averaged over episodes, summed over tasks.
    returns = discounted_returns(episodes.rewards, episodes.mask, GAMMA)
    weights = GAMMA ** torch.arange(episodes.horizon, dtype=torch.float64).view(-1, 1, 1)
    log_probs = episode_log_probs(policy, leaf, episodes)
    reference = (log_probs * weights * (returns - batch.values) * episodes.mask).sum() / episodes.episodes_per_task
    expected = gradient(reference, leaf)
    for name, surrogate in SURROGATES.items():
        got = gradient(surrogate(episode_log_probs(policy, leaf, episodes), batch), leaf)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, msg=name)


def test_dice_value_at_behaviour_params_is_the_discounted_return(setting):
    policy, oracle, params, batch = setting
    value = SURROGATES["dice"](episode_log_probs(policy, params, batch.episodes), batch)
    returns = discounted_returns(batch.episodes.rewards, batch.episodes.mask, GAMMA)[0]
    torch.testing.assert_close(value, returns.mean(1).sum())


def test_gae_lambda_below_one_changes_reinforce_but_not_dice(setting):
    policy, oracle, params, _ = setting
    lam = PolicyGradientOracle(oracle.sampler, oracle.tasks, gamma=GAMMA, gae_lambda=0.5)
    one = PolicyGradientOracle(oracle.sampler, oracle.tasks, gamma=GAMMA, gae_lambda=1.0)
    batch_lam, batch_one = lam.sample(params), one.sample(params)  # same key: same episodes
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    dice = [gradient(SURROGATES["dice"](episode_log_probs(policy, leaf, b.episodes), b), leaf)
            for b in (batch_lam, batch_one)]
    torch.testing.assert_close(dice[0], dice[1])
    rf = [gradient(SURROGATES["reinforce"](episode_log_probs(policy, leaf, b.episodes), b), leaf)
          for b in (batch_lam, batch_one)]
    assert not torch.allclose(rf[0], rf[1])


def test_padded_steps_never_reach_the_exponentials(setting):
    """Log-probabilities of padded steps are meaningless (zero observations); even huge ones
    must not turn into inf * 0 = NaN."""
    policy, oracle, params, batch = setting
    mask = batch.episodes.mask.clone()
    mask[-3:] = 0
    episodes = type(batch.episodes)(**{**batch.episodes.__dict__, "mask": mask})
    padded = type(batch)(**{**batch.__dict__, "episodes": episodes})
    log_probs = episode_log_probs(policy, params, episodes).masked_fill(mask == 0, 1e4)
    for name, surrogate in SURROGATES.items():
        assert torch.isfinite(surrogate(log_probs, padded)), name


@pytest.mark.parametrize("kind", ["dice", "reinforce", "lvc"])
def test_per_step_units_scale_each_task_by_its_length_and_advantage_spread(setting, kind):
    """With per_step_units, task i's surrogate is multiplied by 1 / (mean episode length * std A_i):
    its gradient is the plain one scaled per task, and equals the mean over steps of
    gamma^t grad l_t A_t / std(A) (the units of Finn et al.'s code, where the inner step is 0.1)."""
    policy, oracle, params, batch = setting
    scaled_oracle = PolicyGradientOracle(oracle.sampler, oracle.tasks, gamma=GAMMA, gae_lambda=1.0,
                                         per_step_units=True)
    scaled_oracle.draws = 0
    scaled = scaled_oracle.sample(params)
    assert torch.equal(scaled.episodes.rewards, batch.episodes.rewards)
    mask = batch.episodes.mask
    raw = (batch.advantages / batch.discounts) * mask
    steps = mask.sum((0, 2))
    std = torch.sqrt(((raw - (raw.sum((0, 2)) / steps).view(1, -1, 1)) ** 2 * mask).sum((0, 2)) / steps)
    expected_scale = 1 / (steps / mask.shape[2] * std)
    torch.testing.assert_close(scaled.scale, expected_scale)
    surrogate = SURROGATES[kind]

    def per_task_gradient(data):
        leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(surrogate(episode_log_probs(policy, leaf, data.episodes), data),
                                    list(leaf.values()))
        return torch.cat([g.reshape(3, -1) for g in grads], dim=1)

    plain, per_step = per_task_gradient(batch), per_task_gradient(scaled)
    torch.testing.assert_close(per_step, plain * expected_scale.view(3, 1))
    assert not torch.allclose(per_step, plain)


@pytest.mark.parametrize("kind", ["reinforce", "lvc"])
def test_undiscounted_scores_weight_every_step_alike(setting, kind):
    """``discount_scores=False`` (Finn et al.'s code): the gradient at theta_b is
    ``sum_t grad l_t (R_t - b_t)`` without the gamma^t factor; DiCE refuses it."""
    policy, oracle, params, batch = setting
    flat = PolicyGradientOracle(oracle.sampler, oracle.tasks, surrogate=kind, gamma=GAMMA, discount_scores=False)
    undiscounted = flat.sample(params)  # the same key as ``batch``: the same episodes
    episodes = undiscounted.episodes
    assert torch.equal(episodes.rewards, batch.episodes.rewards)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    log_probs = episode_log_probs(policy, leaf, episodes)
    returns = discounted_returns(episodes.rewards, episodes.mask, GAMMA)
    reference = (log_probs * (returns - undiscounted.values) * episodes.mask).sum() / episodes.episodes_per_task
    got = gradient(flat.objective(leaf, undiscounted), leaf)
    torch.testing.assert_close(got, gradient(reference, leaf), rtol=1e-9, atol=1e-9)
    discounted = gradient(SURROGATES[kind](episode_log_probs(policy, leaf, batch.episodes), batch), leaf)
    assert not torch.allclose(got, discounted)


def test_dice_refuses_undiscounted_scores(setting):
    _, oracle, _, _ = setting
    with pytest.raises(ValueError, match="dice.*gamma"):
        PolicyGradientOracle(oracle.sampler, oracle.tasks, surrogate="dice", discount_scores=False)
