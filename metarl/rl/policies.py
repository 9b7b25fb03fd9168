"""Policies whose parameters are an explicit dict of tensors.

A policy is an ``nn.Module`` that only defines the *shape* of the network; every
computation takes the parameters as an argument (``torch.func.functional_call``), so the
meta-gradient code can differentiate through adapted parameters and evaluate many
parameter sets at once. A parameter dict is *task-batched* when every tensor carries one
extra leading axis (one parameter set per task); the observations then carry the same
leading axis, and the forward pass is vectorised over it with ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarl.params import Params

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


WEIGHT_INITS = ("xavier", "small_output")


def _mlp(sizes: Sequence[int], activation: str, weight_init: str = "xavier") -> nn.Sequential:
    """An MLP initialised by ``weight_init``:

    * ``"xavier"``: Xavier-uniform weights and zero biases in every layer, as in the code of
      Finn et al. (2017) and pytorch-maml-rl. With ReLU the initial network is positively
      homogeneous (f(c x) = c f(x) for c > 0).
    * ``"small_output"``: PyTorch's default initialisation, then the output layer's weights
      scaled by 0.01 and its bias zeroed (the PPO convention), so that a fresh policy's actions are
      centred on zero whatever the state.
    """
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    with torch.no_grad():
        linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        if weight_init == "xavier":
            for layer in linears:
                nn.init.xavier_uniform_(layer.weight)
                layer.bias.zero_()
        else:
            linears[-1].weight.mul_(0.01)
            linears[-1].bias.zero_()
    return nn.Sequential(*layers)


class FunctionalPolicy(nn.Module):
    """Base class: parameter handling shared by the Gaussian and categorical policies.

    ``forward(obs)`` uses the module's own parameters; ``forward_with(params, obs)`` is the same
    function of explicit parameters (``torch.func.functional_call`` semantics). For task-batched
    parameters the layers run as batched matrix products over the task axis, which computes what
    ``vmap(functional_call)`` would, at a fraction of its per-call overhead (it matters: the sampler
    calls the policy once per time step).
    """

    def init_params(self) -> Params:
        """The module's initial parameters as a dict of detached tensors."""
        return {name: p.detach().clone() for name, p in self.named_parameters()}

    def check_params(self, params: Params, what: str = "the parameters") -> None:
        """Raise ``ValueError`` unless ``params`` has exactly this policy's names and shapes."""
        expected = {name: tuple(p.shape) for name, p in self.named_parameters()}
        if {name: tuple(v.shape) for name, v in params.items()} != expected:
            raise ValueError(f"{what} do not fit the config's policy (different names or shapes)")

    def is_task_batched(self, params: Params) -> bool:
        """Whether ``params`` holds one parameter set per task (an extra leading axis)."""
        name, reference = next(iter(self.named_parameters()))
        return params[name].dim() == reference.dim() + 1

    def forward_with(self, params: Params, obs: Tensor) -> tuple[Tensor, ...]:
        """Forward pass with ``params``; vectorised over tasks when ``params`` is task-batched.

        For task-batched params, ``obs`` has shape (tasks, ..., obs_dim); otherwise (..., obs_dim).
        """
        if not self.is_task_batched(params):
            return functional_call(self, params, (obs,))
        return self._batched_forward(params, obs)

    def _batched_forward(self, params: Params, obs: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _batched_mlp(self, net: nn.Sequential, prefix: str, params: Params, obs: Tensor) -> Tensor:
        """``net`` applied per task: obs (B, ..., in) and weights (B, out, in)."""
        x = obs.reshape(obs.shape[0], -1, obs.shape[-1])
        x = _apply_layers(_batched_layers(net, prefix, params), x)
        return x.reshape(*obs.shape[:-1], x.shape[-1])

    def actor(self, params: Params, noise: Tensor) -> Callable[[int, Tensor], tuple[Tensor, Tensor]]:
        """``step(t, obs)``: the actions and log-probabilities ``act(params, obs, noise[t])`` returns,
        for a rollout at fixed ``params`` with its noise (T, ...) drawn in advance. Subclasses prepare
        once what does not change from step to step (the sampler calls ``step`` every time step)."""
        return lambda t, obs: self.act(params, obs, noise[t])


BatchedLayer = tuple[Tensor, Tensor] | nn.Module


def _batched_layers(net: nn.Sequential, prefix: str, params: Params) -> list[BatchedLayer]:
    """The layers of ``net`` for task-batched ``params``: ``(bias (B, 1, out), weight (B, in, out))``
    for a linear layer, the module itself for an activation."""
    layers: list[BatchedLayer] = []
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            layers.append((params[f"{prefix}.{i}.bias"].unsqueeze(1), params[f"{prefix}.{i}.weight"].transpose(1, 2)))
        else:
            layers.append(layer)
    return layers


def _apply_layers(layers: list[BatchedLayer], x: Tensor) -> Tensor:
    """``x`` (B, N, in) through :func:`_batched_layers`' layers."""
    for layer in layers:
        x = torch.baddbmm(layer[0], x, layer[1]) if isinstance(layer, tuple) else layer(x)
    return x


class GaussianMLPPolicy(FunctionalPolicy):
    """Diagonal Gaussian policy: an MLP gives the mean, a learned state-independent log-std.

    Args:
        obs_dim: size of the observation vector.
        action_dim: size of the action vector.
        hidden_sizes: widths of the hidden layers.
        activation: ``"tanh"``, ``"relu"`` or ``"elu"``.
        init_std: initial standard deviation of every action coordinate.
        weight_init: how the mean network starts (see :data:`WEIGHT_INITS` and ``_mlp``).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        weight_init: str = "xavier",
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.mean_net = _mlp([obs_dim, *hidden_sizes, action_dim], activation, weight_init)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std of the action distribution (log-std broadcast to the mean's shape)."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def _batched_forward(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean = self._batched_mlp(self.mean_net, "mean_net", params, obs)
        log_std = params["log_std"].view(mean.shape[0], *([1] * (mean.dim() - 2)), -1)
        return mean, log_std.expand_as(mean)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        """log pi(a|s), summed over action coordinates; shape ``obs.shape[:-1]``."""
        return self.log_prob_from(self.forward_with(params, obs), actions)

    @staticmethod
    def log_prob_from(outputs: tuple[Tensor, ...], actions: Tensor) -> Tensor:
        """log pi(a|s) from the distribution's parameters ``(mean, log_std)``."""
        mean, log_std = outputs
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def act(self, params: Params, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Actions ``mean + std * noise`` for given standard-normal ``noise``, and their log-probabilities."""
        mean, log_std = self.forward_with(params, obs)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return mean + torch.exp(log_std) * noise, log_prob

    def actor(self, params: Params, noise: Tensor) -> Callable[[int, Tensor], tuple[Tensor, Tensor]]:
        """As :meth:`FunctionalPolicy.actor`, for task-batched ``params`` and observations (B, M, obs_dim):
        the layers, the standard deviation and every step's log-probability (which depends on the noise
        only) are computed once; each step is then the mean network and ``mean + std * noise[t]``."""
        if not self.is_task_batched(params):
            return super().actor(params, noise)
        layers = _batched_layers(self.mean_net, "mean_net", params)
        log_std = params["log_std"].unsqueeze(1)  # (B, 1, action_dim), broadcast over a task's M rows
        std = torch.exp(log_std)
        log_probs = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return lambda t, obs: (_apply_layers(layers, obs) + std * noise[t], log_probs[t])

    def mode(self, params: Params, obs: Tensor) -> Tensor:
        """The deterministic action (the mean)."""
        return self.forward_with(params, obs)[0]

    def kl(self, params_old: Params, params_new: Params, obs: Tensor) -> Tensor:
        """KL(pi_old || pi_new) per observation."""
        return self.kl_from(self.forward_with(params_old, obs), self.forward_with(params_new, obs))

    @staticmethod
    def kl_from(old: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> Tensor:
        """KL(pi_old || pi_new) per observation from the distributions' parameters."""
        (mean0, log_std0), (mean1, log_std1) = old, new
        var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
        kl = log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2 * var1) - 0.5
        return kl.sum(-1)

    def draw_noise(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """Standard-normal noise for ``steps`` actions of one episode, shape (steps, action_dim)."""
        return rng.standard_normal((steps, self.action_dim), dtype=np.float32)


class CategoricalMLPPolicy(FunctionalPolicy):
    """Categorical policy over ``num_actions`` discrete actions, logits from an MLP."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        weight_init: str = "xavier",
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.logits_net = _mlp([obs_dim, *hidden_sizes, num_actions], activation, weight_init)

    def forward(self, obs: Tensor) -> tuple[Tensor]:
        """Normalised log-probabilities of every action."""
        return (torch.log_softmax(self.logits_net(obs), dim=-1),)

    def _batched_forward(self, params: Params, obs: Tensor) -> tuple[Tensor]:
        return (torch.log_softmax(self._batched_mlp(self.logits_net, "logits_net", params, obs), dim=-1),)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        """log pi(a|s) for integer actions; shape ``obs.shape[:-1]``."""
        return self.log_prob_from(self.forward_with(params, obs), actions)

    @staticmethod
    def log_prob_from(outputs: tuple[Tensor, ...], actions: Tensor) -> Tensor:
        """log pi(a|s) from the distribution's log-probabilities ``(log_p,)``."""
        return outputs[0].gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def act(self, params: Params, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Gumbel-max sampling with given Uniform(0, 1) ``noise`` of shape (..., num_actions);
        returns the actions and their log-probabilities."""
        (log_p,) = self.forward_with(params, obs)
        gumbel = -torch.log(-torch.log(noise.clamp(1e-12, 1 - 1e-12)))
        actions = torch.argmax(log_p + gumbel, dim=-1)
        return actions, log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def mode(self, params: Params, obs: Tensor) -> Tensor:
        """The most probable action."""
        return torch.argmax(self.forward_with(params, obs)[0], dim=-1)

    def kl(self, params_old: Params, params_new: Params, obs: Tensor) -> Tensor:
        """KL(pi_old || pi_new) per observation."""
        return self.kl_from(self.forward_with(params_old, obs), self.forward_with(params_new, obs))

    @staticmethod
    def kl_from(old: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> Tensor:
        """KL(pi_old || pi_new) per observation from the distributions' log-probabilities."""
        (log_p0,), (log_p1,) = old, new
        return (log_p0.exp() * (log_p0 - log_p1)).sum(-1)

    def draw_noise(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """Uniform noise for Gumbel-max sampling of ``steps`` actions, shape (steps, num_actions)."""
        return rng.random((steps, self.num_actions), dtype=np.float32)


Policy = GaussianMLPPolicy | CategoricalMLPPolicy
