"""An SB3 actor's weights as metarl parameters, and the correspondence of their names.

metarl's MLP policies and SB3's ``MlpPolicy`` (an ``ActorCriticPolicy`` with separate actor and
critic networks) compute the same actor when their parameters correspond as
:mod:`metarl.integrations.sb3` lays out. Reading a model file unpickles nothing (SB3's loader would,
so a crafted file could run code): the architecture comes from plain JSON fields of its ``data``
entry, the weights from a weights-only ``torch.load``, and Stable-Baselines3 need not be installed.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.params import Params
from metarl.rl.policies import ACTIVATIONS, CategoricalMLPPolicy, Policy

ACTIVATION_NAMES = {module: name for name, module in ACTIVATIONS.items()}
SB3_POLICIES_MODULE = "stable_baselines3.common.policies"  # ActorCriticPolicy's module, as SB3's data records it
SB3_DEFAULT_ACTIVATION = "<class 'torch.nn.modules.activation.Tanh'>"  # MlpPolicy's when policy_kwargs has none
MAX_SB3_ENTRY_BYTES = 1 << 30


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
