"""Convert a published inner step size into the units of metarl's surrogate.

Finn et al.'s inner step (0.1) applies to the surrogate of rllab / pytorch-maml-rl: the mean over
all time steps of ``log pi * A`` with advantages standardised per task and no ``gamma^t``
weights. metarl's surrogates are sums over time (an estimate of the discounted return) with raw
advantages, so their gradients are larger by a factor that depends on the family (horizon,
reward scale, episode lengths). This script measures that factor at the initial policy, per task,
as the ratio of the two gradients' norms on the same rollouts, and prints the step that moves
the parameters as far as the published one would: ``published / median ratio``. The shipped
configs no longer need it: they set ``surrogate.per_step_units``, which puts the surrogate in the
published units directly; it remains for runs with the summed surrogate.

    python scripts/inner_step_scale.py [--families halfcheetah_vel ...] [--tasks 8] [--episodes 20] [--step 0.1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import envs
from envs.locomotion import LOCOMOTION_FAMILIES
from metarl.estimators.meta_gradient import objective_gradient
from metarl.experiment.metrics import format_table
from metarl.params import stack_params, tree_norm
from metarl.rl.oracles import PolicyGradientOracle, episode_log_probs
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.returns import gae
from metarl.rl.sampling import VectorSampler
from metarl.rl.surrogates import PolicyGradientBatch


def published_surrogate_gradient_norms(policy: GaussianMLPPolicy, params: dict, batch: PolicyGradientBatch,
                                       gamma: float) -> torch.Tensor:
    """Per-task gradient norms of mean_t(log pi * standardised GAE(lambda=1) advantage)."""
    episodes, mask = batch.episodes, batch.episodes.mask
    advantages = gae(episodes.rewards, batch.values, mask, gamma, 1.0)
    count = mask.sum((0, 2), keepdim=True)
    mean = (advantages * mask).sum((0, 2), keepdim=True) / count
    std = (((advantages - mean) ** 2 * mask).sum((0, 2), keepdim=True) / count).sqrt()
    standardised = (advantages - mean) / (std + 1e-8) * mask
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    log_probs = episode_log_probs(policy, leaves, episodes)
    objective = ((log_probs * standardised * mask).sum((0, 2)) / mask.sum((0, 2))).sum()
    grads = torch.autograd.grad(objective, list(leaves.values()))
    return torch.sqrt(sum((g.reshape(g.shape[0], -1) ** 2).sum(1) for g in grads))


def ratio_for(name: str, tasks: int, episodes: int, gamma: float) -> torch.Tensor:
    """Per-task ratio of metarl's DiCE gradient norm to the published surrogate's, at initialisation."""
    family = envs.make_family(name)
    env = family.make_env()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (100, 100), "relu", 1.0)
    params = stack_params(policy.init_params(), tasks)
    sampler = VectorSampler(family, policy, episodes, seed=0)
    oracle = PolicyGradientOracle(sampler, family.sample_tasks(tasks, np.random.default_rng(0)), gamma=gamma)
    batch = oracle.sample(params)
    ours = tree_norm(objective_gradient(oracle, params, batch), task_axis=True)
    return ours / published_surrogate_gradient_norms(policy, params, batch, gamma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=[f.name for f in LOCOMOTION_FAMILIES])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--step", type=float, default=0.1, help="the published inner step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.families:
        ratio = ratio_for(name, args.tasks, args.episodes, args.gamma)
        median = float(ratio.median())
        rows.append((name, f"{median:,.0f}", f"{float(ratio.min()):,.0f}-{float(ratio.max()):,.0f}",
                     f"{args.step / median:.1e}"))
    print(f"gradient-norm ratio, metarl dice / published surrogate, at initialisation "
          f"({args.tasks} tasks x {args.episodes} episodes)")
    print(format_table(["family", "median ratio", "range", f"inner_lr for {args.step}"], rows))


if __name__ == "__main__":
    main()
