"""Stable-Baselines3 interoperability: export an adapted policy as an SB3 ``PPO`` model, and read
the actor of an SB3 ``PPO`` or ``A2C`` model as metarl parameters.

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

Reading a model file unpickles nothing (SB3's loader would, so a crafted file could run code): the
architecture comes from plain JSON fields of its ``data`` entry, the weights from a weights-only
``torch.load``, and Stable-Baselines3 need not be installed. Exporting needs it; it is optional and
imported only here, when a function needs it.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import zipfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from torch import nn

from envs import MissingDependencyError, Task
from metarl.build import build_family, build_policy
from metarl.config import Config, load_config
from metarl.evaluation import adapt_to_tasks, check_task, draw_task
from metarl.policies import ACTIVATIONS, CategoricalMLPPolicy, Params, Policy
from metarl.trainer import PARAMS_FILE, load_params

if TYPE_CHECKING:
    from stable_baselines3 import PPO

SB3_INSTALL = 'pip install -e ".[sb3]" (in the checkout) or pip install stable-baselines3'
ACTIVATION_NAMES = {module: name for name, module in ACTIVATIONS.items()}
SB3_POLICIES_MODULE = "stable_baselines3.common.policies"  # ActorCriticPolicy's module, as SB3's data records it
SB3_DEFAULT_ACTIVATION = "<class 'torch.nn.modules.activation.Tanh'>"  # MlpPolicy's when policy_kwargs has none
MAX_SB3_ENTRY_BYTES = 1 << 30


def require_sb3() -> ModuleType:
    """The ``stable_baselines3`` module, or :class:`MissingDependencyError` saying what to install."""
    try:
        return importlib.import_module("stable_baselines3")
    except ImportError as error:
        raise MissingDependencyError(
            f"Stable-Baselines3 interoperability needs stable-baselines3, which is not installed or does not "
            f"import ({error}); install it with: {SB3_INSTALL}"
        ) from None


def _actor_net(policy: Policy) -> tuple[str, nn.Sequential]:
    """The name and module of the policy's MLP (the Gaussian's mean, or the categorical's logits)."""
    if isinstance(policy, CategoricalMLPPolicy):
        return "logits_net", policy.logits_net
    return "mean_net", policy.mean_net


def architecture(policy: Policy) -> tuple[list[int], str]:
    """The policy's hidden sizes and activation name."""
    _, net = _actor_net(policy)
    hidden = [layer.out_features for layer in net if isinstance(layer, nn.Linear)][:-1]
    activation = next(ACTIVATION_NAMES[type(layer)] for layer in net if not isinstance(layer, nn.Linear))
    return hidden, activation


def sb3_names(policy: Policy) -> dict[str, str]:
    """metarl parameter name -> name of the same tensor in an SB3 ``ActorCriticPolicy``."""
    prefix, net = _actor_net(policy)
    names = {}
    for name, _ in policy.named_parameters():
        if name == "log_std":
            names[name] = name
            continue
        index, kind = name.removeprefix(f"{prefix}.").split(".")
        last = int(index) == len(net) - 1
        names[name] = f"action_net.{kind}" if last else f"mlp_extractor.policy_net.{index}.{kind}"
    return names


def sb3_policy_kwargs(policy: Policy) -> dict[str, Any]:
    """``policy_kwargs`` of an SB3 ``MlpPolicy`` with ``policy``'s hidden sizes and activation for
    both the actor and the critic."""
    hidden, activation = architecture(policy)
    return {"net_arch": {"pi": hidden, "vf": hidden}, "activation_fn": ACTIVATIONS[activation]}


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


def read_sb3_model(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``data`` JSON and the policy weights (``policy.pth``) of an SB3 model file.

    Nothing is unpickled: SB3's own loader unpickles (cloudpickle) the ``:serialized:`` entries of
    ``data``, so a crafted file could run code. Here ``data`` is read as plain JSON and the weights
    with ``torch.load(weights_only=True)``; Stable-Baselines3 need not be installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"SB3 model {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            for name in ("data", "policy.pth"):
                if archive.getinfo(name).file_size > MAX_SB3_ENTRY_BYTES:
                    raise ValueError(f"its {name} entry is larger than {MAX_SB3_ENTRY_BYTES} bytes")
            data = json.loads(archive.read("data"))
            weights = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file fails in many ways
        raise ValueError(f"{str(path)!r} is not a readable SB3 model: {error}") from None
    if not (isinstance(data, dict) and isinstance(weights, dict)
            and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise ValueError(f"{str(path)!r} is not a readable SB3 model: unexpected contents")
    return data, weights


def sb3_actor(path: str | Path) -> tuple[list[int], str, dict[str, torch.Tensor]]:
    """Hidden sizes, activation name and weights of the actor of an SB3 ``MlpPolicy`` model file
    (``PPO``, ``A2C``), from its plain JSON fields and weights only (see :func:`read_sb3_model`);
    ``ValueError`` for what a metarl policy cannot represent."""
    data, weights = read_sb3_model(path)
    where = f"SB3 model {str(path)!r}"
    policy_class = data.get("policy_class")
    module = policy_class.get("__module__") if isinstance(policy_class, dict) else None
    if module != SB3_POLICIES_MODULE or "action_net.weight" not in weights:
        raise ValueError(f"{where}: its policy is not an actor-critic policy (PPO or A2C with MlpPolicy)")
    kwargs = data.get("policy_kwargs") if isinstance(data.get("policy_kwargs"), dict) else {}
    if data.get("use_sde") is not False or str(kwargs.get("squash_output", False)) != "False":
        raise ValueError(f"{where}: SB3 policies with gSDE or squashed actions are not supported")
    if any(name.startswith(("features_extractor.", "pi_features_extractor.")) for name in weights):
        raise ValueError(f"{where}: its features extractor is not supported (MlpPolicy's FlattenExtractor only)")
    activation_fn = str(kwargs.get("activation_fn", SB3_DEFAULT_ACTIVATION))
    activation = next((name for name, module in ACTIVATIONS.items() if activation_fn.endswith(f".{module.__name__}'>")),
                      None)
    if activation is None:
        raise ValueError(f"{where}: its activation {activation_fn} is not supported; allowed: "
                         f"{', '.join(module.__name__ for module in ACTIVATIONS.values())}")
    layers = sorted((int(m.group(1)), tensor) for name, tensor in weights.items()
                    if (m := re.fullmatch(r"mlp_extractor\.policy_net\.(\d+)\.weight", name)))
    return [tensor.shape[0] for _, tensor in layers], activation, weights


def actor_params(path: str | Path, policy: Policy) -> Params:
    """metarl parameters for ``policy`` copied from the actor of the SB3 model at ``path``.

    The SB3 actor must have the hidden sizes and activation of ``policy`` (the config's
    ``policy.hidden_sizes`` and ``policy.activation``) and the task family's spaces.
    """
    hidden, activation, weights = sb3_actor(path)
    expected = architecture(policy)
    if (hidden, activation) != expected:
        raise ValueError(
            f"policy.init_from = {str(path)!r}: the SB3 actor has hidden sizes {hidden} and activation "
            f"{activation!r}, the config has policy.hidden_sizes = {expected[0]} and policy.activation = "
            f"{expected[1]!r}; set them to the SB3 model's"
        )
    params = {}
    for name, sb3_name in sb3_names(policy).items():
        reference = policy.get_parameter(name)
        if sb3_name not in weights or weights[sb3_name].shape != reference.shape:
            found = tuple(weights[sb3_name].shape) if sb3_name in weights else "missing"
            raise ValueError(
                f"policy.init_from = {str(path)!r}: the SB3 policy does not fit the task family's spaces "
                f"({sb3_name}: {found}, the family's policy needs {tuple(reference.shape)})"
            )
        params[name] = weights[sb3_name].detach().clone().to(reference.dtype)
    return params


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
