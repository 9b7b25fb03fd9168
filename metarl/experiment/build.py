"""Construct the pieces of an experiment (task family, policy, sampler, outer update) from its config."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import torch

import envs
from envs import Task, TaskFamily
from metarl.estimators.meta_gradient import inner_step_size
from metarl.experiment.config import Config
from metarl.outer.lipschitz import OnlineLipschitz
from metarl.outer.optimizers import ADAPTIVE_STEP_CONSTANTS, SGD, Adam, AdaptiveSGD, OuterOptimizer
from metarl.outer.trpo import TRPO
from metarl.params import Params
from metarl.rl.oracles import PolicyGradientOracle
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, Policy
from metarl.rl.returns import LinearFeatureBaseline
from metarl.rl.sampling import RaySampler, Sampler, SubprocessSampler, VectorSampler, WorkerSpec
from metarl.rl.sampling.step_budget import StepBudgetSampler
from metarl.rl.sb3_weights import actor_params

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_family(config: Config) -> TaskFamily:
    return envs.make_family(config.env.family, **config.env.kwargs)


def build_policy(config: Config, family: TaskFamily) -> Policy:
    """A policy matching the family's spaces, initialised from ``config.seed``."""
    env = family.make_env()
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"task family {family.name!r}: observations must be a flat Box, got {obs_space}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        if isinstance(action_space, gym.spaces.Discrete):
            policy: Policy = CategoricalMLPPolicy(
                obs_space.shape[0], int(action_space.n), config.policy.hidden_sizes, config.policy.activation,
                config.policy.weight_init,
            )
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            policy = GaussianMLPPolicy(
                obs_space.shape[0], action_space.shape[0], config.policy.hidden_sizes,
                config.policy.activation, config.policy.init_std, config.policy.weight_init,
            )
        else:
            raise ValueError(f"task family {family.name!r}: unsupported action space {action_space}")
    finally:
        torch.random.set_rng_state(generator_state)
    return policy.to(DTYPES[config.train.dtype])


def initial_params(config: Config, policy: Policy) -> Params:
    """The starting meta-parameters: the actor of the SB3 model ``policy.init_from`` when set,
    else the policy's seeded initialisation."""
    if config.policy.init_from is None:
        return policy.init_params()

    return actor_params(config.policy.init_from, policy)


def build_family_and_policy(config: Config) -> tuple[TaskFamily, Policy]:
    """The task family and the policy of ``config`` (what every sampling worker builds at start-up)."""
    family = build_family(config)
    return family, build_policy(config, family)


def build_sampler(config: Config, family: TaskFamily, policy: Policy, seed: int, episodes_per_task: int) -> Sampler:
    """The back-end of ``sampler.kind``; worker back-ends start their workers here (close the
    sampler, or use it as a context manager, to stop them)."""
    dtype, settings = DTYPES[config.train.dtype], config.sampler
    if settings.kind == "vector":
        return VectorSampler(family, policy, episodes_per_task, seed=seed, dtype=dtype)
    spec = WorkerSpec(partial(build_family_and_policy, config), episodes_per_task, seed, dtype)
    pool = {"workers": settings.workers, "timeout": settings.timeout, "max_restarts": settings.max_restarts}
    if settings.kind == "subprocess":
        return SubprocessSampler(spec, policy, **pool)
    return RaySampler(spec, policy, address=settings.address, **pool)


def build_collection(config: Config, family: TaskFamily, policy: Policy, seed: int, episodes_per_task: int,
                     protocol: str = "episodes", workers: int = 1) -> Sampler:
    """``episodes_per_task`` episodes per task as ``protocol`` collects them: independent episodes, or
    episodes up to a budget of that many horizons of steps as rllab's vectorised sampler (``"steps"``)
    or its parallel sampler on ``workers`` workers (``"workers"``) collects them
    (:mod:`metarl.rl.sampling.step_budget`)."""
    if protocol == "episodes":
        return build_sampler(config, family, policy, seed, episodes_per_task)
    per_round = workers if protocol == "workers" else episodes_per_task
    return StepBudgetSampler(build_sampler(config, family, policy, seed, per_round), family.horizon,
                             budget=episodes_per_task * family.horizon, keep_running=protocol == "workers")


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device: ``auto`` is CUDA where torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device = {name!r}, but this torch build sees no CUDA device "
                             "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device = {name!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def on_device(tree: Any, device: torch.device) -> Any:
    """``tree`` (nested dicts, lists and tuples) with every tensor moved to ``device``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: on_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(on_device(v, device) for v in tree)
    return tree


def build_oracle(config: Config, sampler: Sampler, tasks: Sequence[Task], key: tuple[int, ...]) -> PolicyGradientOracle:
    """The RL task oracle over ``tasks`` with the config's surrogate settings."""
    surrogate = config.surrogate
    return PolicyGradientOracle(
        sampler, tasks, surrogate=surrogate.kind, gamma=surrogate.gamma, gae_lambda=surrogate.gae_lambda,
        normalize_advantages=surrogate.normalize_advantages,
        per_step_units=surrogate.per_step_units, discount_scores=surrogate.discount_scores, key=key,
        baseline=LinearFeatureBaseline(ridge=surrogate.baseline_ridge),
    )


def build_outer(config: Config, params: Params) -> OuterOptimizer:
    """The configured outer update."""
    outer = config.outer
    if outer.kind == "sgd":
        return SGD(outer.lr)
    if outer.kind == "trpo":
        inner_steps = 0 if config.meta.method == "pretrain" else config.meta.inner_steps
        return TRPO(inner_step_size(config.meta.inner_lr, config.meta.inner_steps, config.meta.inner_step_rule),
                    inner_steps, max_kl=outer.max_kl, cg_iterations=outer.cg_iterations,
                    cg_damping=outer.cg_damping, line_search_steps=outer.line_search_steps,
                    line_search_ratio=outer.line_search_ratio, line_search=outer.line_search,
                    metric=outer.metric, metric_episodes=outer.metric_episodes, replay=outer.replay,
                    direction=outer.direction, metric_tasks=outer.metric_tasks,
                    metric_task_chunk=outer.metric_task_chunk)
    if outer.kind == "adam":
        return Adam(params, outer.lr, anneal_steps=config.train.iterations if outer.anneal else None)
    c = outer.c if outer.c is not None else ADAPTIVE_STEP_CONSTANTS[config.meta.method]
    alpha = inner_step_size(config.meta.inner_lr, config.meta.inner_steps, config.meta.inner_step_rule)
    lipschitz = OnlineLipschitz(outer.smoothness, outer.rho, outer.probe_radius) if outer.estimates_online else None
    return AdaptiveSGD(c, alpha, smoothness=outer.smoothness, rho=outer.rho, lipschitz=lipschitz)
