"""The estimators on the RL oracle (2D navigation, DiCE surrogate)."""

import numpy as np
import pytest
import torch

import envs
from metarl.estimators.meta_gradient import meta_gradient
from metarl.params import stack_params, tree_norm
from metarl.rl.oracles import PolicyGradientOracle
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampling import VectorSampler


def navigation_oracle(activation="tanh", seed=0, surrogate="dice"):
    torch.manual_seed(seed)
    family = envs.make_family("navigation2d", horizon=20)
    policy = GaussianMLPPolicy(2, 2, (32, 32), activation, init_std=0.3).double()
    sampler = VectorSampler(family, policy, 5, seed=seed, dtype=torch.float64)
    tasks = family.sample_tasks(3, np.random.default_rng(seed))
    return policy, lambda: PolicyGradientOracle(sampler, tasks, surrogate=surrogate, key=(0,))


def relative_error(a, b):
    diff = {k: a[k] - b[k] for k in a}
    return tree_norm(diff, task_axis=True) / tree_norm(b, task_axis=True)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("surrogate", ["dice", "reinforce", "lvc"])
def test_hfmaml_converges_to_maml_as_delta_shrinks_on_the_same_rollouts(steps, surrogate):
    """Same seeds, same rollouts: the finite difference of the surrogate's gradient is the
    surrogate's own Hessian-vector product up to O(delta^2) (a smooth policy: tanh), the one MAML
    takes by double backward: unbiased with DiCE, Finn et al.'s biased one with reinforce."""
    policy, make_oracle = navigation_oracle(surrogate=surrogate)
    params = stack_params(policy.init_params(), 3)
    exact = meta_gradient("maml", make_oracle(), params, inner_lr=0.01, inner_steps=steps)
    errors = [relative_error(meta_gradient("hfmaml", make_oracle(), params, inner_lr=0.01, inner_steps=steps,
                                           delta=delta), exact).max().item() for delta in (1e-3, 1e-4)]
    assert errors[1] < 5e-5  # measured 2.5e-6 (one step) and 1.2e-5 (two steps)
    assert errors[1] < errors[0] / 30  # second order in delta: a tenfold smaller delta, ~100x smaller error


def test_fomaml_differs_from_maml_on_rl():
    policy, make_oracle = navigation_oracle()
    params = stack_params(policy.init_params(), 3)
    maml = meta_gradient("maml", make_oracle(), params, inner_lr=0.01)
    fomaml = meta_gradient("fomaml", make_oracle(), params, inner_lr=0.01)
    assert relative_error(fomaml, maml).min() > 1e-3
