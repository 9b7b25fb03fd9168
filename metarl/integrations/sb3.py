"""Stable-Baselines3 interoperability: export an adapted policy as an SB3 ``PPO`` model (reading an
SB3 actor as metarl parameters is :mod:`metarl.rl.sb3_weights`).

metarl's MLP policies and SB3's ``MlpPolicy`` (an ``ActorCriticPolicy`` with separate actor and
critic networks) compute the same actor when their parameters correspond like this::

    metarl                       SB3
    mean_net.<i> (hidden)        mlp_extractor.policy_net.<i>
    mean_net.<last>              action_net
    log_std                      log_std            (both state-independent)

(``logits_net`` in place of ``mean_net``, and no ``log_std``, for Discrete actions.) SB3's critic
is not part of a metarl policy: an exported model keeps SB3's initial value network.

SB3's ``predict(obs, deterministic=True)`` returns the Gaussian's mean *clipped* to the action
space's bounds; metarl's ``policy.mode(params, obs)`` is the unclipped mean (the environments clip
actions themselves), so the two agree on the clipped mean.

Exporting needs Stable-Baselines3; it is optional and imported only here, when a function needs it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import gymnasium as gym
import torch

from envs import MissingDependencyError, Task
from metarl.experiment.build import build_family, build_policy
from metarl.experiment.config import Config, load_config
from metarl.experiment.evaluation import adapt_to_tasks, check_task, draw_task
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sb3_weights import sb3_names, sb3_policy_kwargs

if TYPE_CHECKING:
    from stable_baselines3 import PPO

SB3_INSTALL = 'pip install -e ".[sb3]" (in the checkout) or pip install stable-baselines3'


def require_sb3() -> ModuleType:
    """The ``stable_baselines3`` module, or :class:`MissingDependencyError` saying what to install."""
    try:
        return importlib.import_module("stable_baselines3")
    except ImportError as error:
        raise MissingDependencyError(
            f"Stable-Baselines3 interoperability needs stable-baselines3, which is not installed or does not "
            f"import ({error}); install it with: {SB3_INSTALL}"
        ) from None


def to_sb3(policy: Policy, params: Params, env: gym.Env, seed: int | None = None) -> PPO:
    """An SB3 ``PPO`` model on ``env`` whose actor is ``policy`` with ``params``.

    The ``MlpPolicy`` has the policy's hidden sizes and activation for both the actor and the
    critic (``ortho_init=False``); the critic keeps SB3's initialisation. ``seed`` is SB3's (which
    also seeds the global random generators).
    """
    sb3 = require_sb3()
    policy.check_params(params)
    policy_kwargs = {**sb3_policy_kwargs(policy), "ortho_init": False}
    model = sb3.PPO("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu")
    with torch.no_grad():
        for name, sb3_name in sb3_names(policy).items():
            target = model.policy.get_parameter(sb3_name)
            target.copy_(params[name].to(target.dtype))
    return model


def adapt_to_task(config: Config, params: Params, task: Task, steps: int, seed: int | None = None) -> Params:
    """``params`` after ``steps`` policy-gradient steps on ``task``, as ``metarl evaluate`` adapts
    (the run's inner step, ``evaluation.episodes_per_task`` episodes per step, rollouts drawn from
    ``seed``, by default ``evaluation.seed``)."""
    if steps < 0:
        raise ValueError(f"steps = {steps}: the number of adaptation steps must be >= 0")
    if steps == 0:
        return params
    seed = config.evaluation.seed if seed is None else seed
    thetas, _ = adapt_to_tasks(config, params, [task], steps=steps, seed=seed)
    return {k: v[0] for k, v in thetas[-1].items()}


def export_sb3(run_dir: str | Path, task: Task | None = None, steps: int = 1, path: str | Path = "model.zip", *,
               task_seed: int | None = None, seed: int | None = None) -> Path:
    """Adapt a run's meta-parameters to one task and save them as an SB3 ``PPO`` model.

    Args:
        run_dir: a finished run directory (``config.yaml`` and ``params.pt``).
        task: the task's parameters (for navigation ``{"goal": [x, y]}``); or give ``task_seed``.
        steps: adaptation steps K as ``metarl evaluate`` takes them; 0 exports the meta-parameters.
        path: the model file; ``.zip`` is appended when it has no suffix, as SB3 does.
        task_seed: draw the task from the run's family with this seed instead of giving ``task``.
        seed: seed of the adaptation rollouts (default: the run's ``evaluation.seed``).

    Returns the path written. ``PPO.load(path, env=env)`` continues training on an env of the
    family set to the task.
    """
    require_sb3()  # before the adaptation, which may take a while
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".zip")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; give the model file to write")
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{str(path)!r} is a symbolic link to a missing file ({os.readlink(path)}); give another path")
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    family = build_family(config)
    task = check_task(family, draw_task(family, task, task_seed))
    policy = build_policy(config, family)
    params = adapt_to_task(config, load_params(run_dir / PARAMS_FILE), task, steps, seed)
    env = family.make_env(task)
    try:
        to_sb3(policy, params, env, seed=config.seed).save(path)
    finally:
        env.close()
    return path
