"""Meta-gradient estimators MAML, FO-MAML and HF-MAML, written once against a task oracle.

MAML and FO-MAML: Finn, Abbeel & Levine (2017), https://arxiv.org/abs/1703.03400; N inner steps
and their ``alpha_0 / N`` step rule: Ji, Yang & Liang (2020), https://arxiv.org/abs/2002.07836.

Ascent form: ``J`` is the expected return (or minus a loss) and is maximised. For one task,
with N inner steps of size alpha::

    theta_0 = theta,  theta_{k+1} = theta_k + alpha * grad S(theta_k; D_k)   (D_k drawn at theta_k)
    v = grad S(theta_N; D_out)                                            (D_out drawn at theta_N)
    u_N = v,  u_k = u_{k+1} + alpha * H_k u_{k+1},  meta-gradient = u_0

* ``maml``: ``H_k u`` is an exact Hessian-vector product (double backward) of the surrogate on
  D_k (``hessian_batch="shared"``) or on a fresh batch drawn at theta_k (``"independent"``).
* ``fomaml``: the meta-gradient is ``v`` (no second-order term).
* ``hfmaml`` (Fallah, Mokhtari & Ozdaglar 2020, https://arxiv.org/abs/1908.10400): ``H_k u`` is
  replaced by the finite difference ``[grad S(theta_k + delta u) - grad S(theta_k - delta u)] /
  (2 delta)`` on the same batch, first-order gradients only (or the forward difference
  ``[grad S(theta_k + delta u) - grad S(theta_k)] / delta``, which on a shared batch reuses the
  inner step's gradient). With ``delta_rule="scaled"``, ``delta = delta_0 / ||u||``; with
  ``"theory"``, ``delta = 1 / (6 rho alpha ||u||)``. Both ``maml`` and ``hfmaml`` take the Hessian
  of the oracle's surrogate: for RL the unbiased one is importance weighted (``dice``). Where the
  surrogate's gradient has kinks (ReLU policies) the difference jumps across them and its variance
  grows as delta shrinks; double backward leaves the kinks out.

An oracle with ``task_axis = True`` carries B tasks at once: every parameter tensor has a leading
task axis and its objective is the sum of the B independent per-task objectives, so gradients
and Hessian-vector products stay per task. Norms (for delta and the step-size rule) are then
taken per task. This is how the RL trainer batches a meta-batch; the maths is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from metarl.params import Params, as_leaves, detached, tree_axpy, tree_norm, tree_scale

Method = Literal["maml", "fomaml", "hfmaml"]
METHODS: tuple[str, ...] = ("maml", "fomaml", "hfmaml")
STEP_RULES: tuple[str, ...] = ("constant", "inverse_steps")
HESSIAN_BATCHES: tuple[str, ...] = ("shared", "independent")
DELTA_RULES: tuple[str, ...] = ("scaled", "theory")
DIFFERENCES: tuple[str, ...] = ("central", "forward")


@runtime_checkable
class TaskOracle(Protocol):
    """What the estimators need from a task."""

    def sample(self, params: Params) -> Any:
        """Fresh data drawn at ``params`` (rollouts in RL, a minibatch in supervised learning)."""

    def objective(self, params: Params, batch: Any) -> Tensor:
        """Differentiable scalar to maximise, whose gradient (and Hessian) at the sampling
        parameters estimate those of the task's J."""


@dataclass
class MetaGradient:
    """An estimate and what was computed on the way (for logging and outer step rules)."""

    direction: Params  # ascent direction u_0, per task when the oracle has a task axis
    adapted: Params  # theta_N
    inner_batches: list[Any]  # D_0 .. D_{N-1}
    outer_batch: Any  # D_out
    inner_grad_norm: Tensor  # ||grad S(theta_0; D_0)||, per task when the oracle has a task axis
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sampling, adaptation, meta_gradient


class _SampleClock:
    """Draws from an oracle and adds up the seconds spent drawing."""

    def __init__(self, oracle: TaskOracle) -> None:
        self.oracle, self.seconds = oracle, 0.0

    def sample(self, params: Params) -> Any:
        start = time.perf_counter()
        batch = self.oracle.sample(params)
        self.seconds += time.perf_counter() - start
        return batch


def inner_step_size(inner_lr: float, inner_steps: int, rule: str = "constant") -> float:
    """The inner step alpha: ``inner_lr``, or ``inner_lr / N`` for ``"inverse_steps"`` (Ji et al.)."""
    if rule not in STEP_RULES:
        raise ValueError(f"inner step rule {rule!r} is unknown; allowed: {', '.join(STEP_RULES)}")
    return inner_lr / inner_steps if rule == "inverse_steps" else inner_lr


def gradient_of(oracle: TaskOracle, params: Params, batch: Any, create_graph: bool = False) -> Params:
    """``grad objective(params, batch)``; ``params`` must be leaves that require grad."""
    value = oracle.objective(params, batch)
    if not isinstance(value, Tensor) or value.dim() != 0:
        raise ValueError("oracle.objective must return a scalar tensor (sum the per-task objectives)")
    grads = torch.autograd.grad(value, list(params.values()), create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def objective_gradient(oracle: TaskOracle, params: Params, batch: Any) -> Params:
    """``grad objective(params, batch)`` (per task when the oracle has a task axis)."""
    return gradient_of(oracle, as_leaves(params), batch)


def exact_hvp(params: Params, grad_with_graph: Params, u: Params, retain_graph: bool = False) -> Params:
    """``H u`` by differentiating ``<grad, u>`` once more (double backward); ``retain_graph`` keeps
    the gradient's graph for further products."""
    inner = sum((grad_with_graph[k] * u[k]).sum() for k in params)
    hvp = torch.autograd.grad(inner, list(params.values()), retain_graph=retain_graph, allow_unused=True)
    return {k: torch.zeros_like(p) if h is None else h for (k, p), h in zip(params.items(), hvp)}


def finite_difference_hvp(
    oracle: TaskOracle, theta: Params, batch: Any, u: Params, delta: Tensor | float, task_axis: bool,
    difference: str = "central", gradient_at_theta: Params | None = None,
) -> Params:
    """``H u`` by a difference of gradients on one batch: central,
    ``[grad S(theta + delta u) - grad S(theta - delta u)] / (2 delta)``, or forward,
    ``[grad S(theta + delta u) - grad S(theta)] / delta`` (reusing ``gradient_at_theta`` if given)."""
    plus = gradient_of(oracle, as_leaves(tree_axpy(theta, delta, u, task_axis)), batch)
    if difference == "forward":
        base = gradient_at_theta if gradient_at_theta is not None else gradient_of(oracle, as_leaves(theta), batch)
        return tree_scale({k: plus[k] - base[k].detach() for k in theta}, 1.0 / delta, task_axis)
    minus = gradient_of(oracle, as_leaves(tree_axpy(theta, -delta, u, task_axis)), batch)
    return tree_scale({k: plus[k] - minus[k] for k in theta}, 0.5 / delta, task_axis)


def _check_options(method: str, inner_steps: int, hessian_batch: str, delta: float, delta_rule: str,
                   rho: float | None, difference: str = "central") -> None:
    if method not in METHODS:
        raise ValueError(f"meta-gradient method {method!r} is unknown; allowed: {', '.join(METHODS)}")
    if inner_steps < 1:
        raise ValueError(f"inner_steps = {inner_steps}: must be an integer >= 1")
    if hessian_batch not in HESSIAN_BATCHES:
        raise ValueError(f"hessian_batch {hessian_batch!r} is unknown; allowed: {', '.join(HESSIAN_BATCHES)}")
    if delta_rule not in DELTA_RULES:
        raise ValueError(f"delta_rule {delta_rule!r} is unknown; allowed: {', '.join(DELTA_RULES)}")
    if difference not in DIFFERENCES:
        raise ValueError(f"finite difference {difference!r} is unknown; allowed: {', '.join(DIFFERENCES)}")
    if delta_rule == "scaled" and not delta > 0:
        raise ValueError(f"delta = {delta}: must be > 0")
    if delta_rule == "theory" and (rho is None or not rho > 0):
        raise ValueError(f"rho = {rho}: delta_rule='theory' needs the Hessian Lipschitz constant rho > 0")


def estimate_meta_gradient(
    method: str,
    oracle: TaskOracle,
    params: Params,
    *,
    inner_lr: float,
    inner_steps: int = 1,
    step_rule: str = "constant",
    hessian_batch: str = "shared",
    delta: float = 1e-3,
    delta_rule: str = "scaled",
    rho: float | None = None,
    difference: str = "central",
) -> MetaGradient:
    """One meta-gradient estimate for one task (or one task-batched oracle), with by-products.

    See :func:`meta_gradient` for the arguments.
    """
    _check_options(method, inner_steps, hessian_batch, delta, delta_rule, rho, difference)
    task_axis = bool(getattr(oracle, "task_axis", False))
    alpha = inner_step_size(inner_lr, inner_steps, step_rule)
    second_order = method != "fomaml"
    keep_graph = method == "maml" and hessian_batch == "shared"

    clock = _SampleClock(oracle)
    start = time.perf_counter()
    thetas: list[Params] = []
    inner_batches: list[Any] = []
    hessian_batches: list[Any] = []
    graphs: list[Params] = []
    theta = detached(params)
    inner_grad_norm = torch.zeros(())
    for k in range(inner_steps):
        theta_k = as_leaves(theta)
        batch = clock.sample(detached(theta_k))
        if second_order and hessian_batch == "independent":
            hessian_batches.append(clock.sample(detached(theta_k)))
        else:
            hessian_batches.append(batch)
        grad = gradient_of(oracle, theta_k, batch, create_graph=keep_graph)
        if k == 0:
            inner_grad_norm = tree_norm(detached(grad), task_axis)
        thetas.append(theta_k)
        inner_batches.append(batch)
        graphs.append(grad)
        theta = tree_axpy(detached(theta_k), alpha, detached(grad), task_axis)

    adapted = as_leaves(theta)
    adaptation_end, sampled_while_adapting = time.perf_counter(), clock.seconds
    outer_batch = clock.sample(detached(adapted))
    u = gradient_of(oracle, adapted, outer_batch)

    if second_order:
        for k in reversed(range(inner_steps)):
            hvp = _hessian_vector_product(method, oracle, thetas[k], graphs[k], hessian_batches[k], u,
                                          hessian_batch, alpha, delta, delta_rule, rho, task_axis, difference)
            u = tree_axpy(u, alpha, hvp, task_axis)

    end = time.perf_counter()
    timings = {
        "sampling": clock.seconds,
        "adaptation": adaptation_end - start - sampled_while_adapting,
        "meta_gradient": end - adaptation_end - (clock.seconds - sampled_while_adapting),
    }
    return MetaGradient(detached(u), detached(adapted), inner_batches, outer_batch, inner_grad_norm, timings)


def policy_gradient_estimate(oracle: TaskOracle, params: Params) -> MetaGradient:
    """No adaptation: ``grad S(theta; D)`` on a fresh batch D drawn at theta.

    This is the update of the *pretrained* baseline of Finn et al. (one policy trained with plain
    policy gradient on tasks drawn from the family, adapted like MAML only at evaluation), in the
    shape of a meta-gradient estimate so the same trainer and outer updates run it.
    """
    task_axis = bool(getattr(oracle, "task_axis", False))
    clock = _SampleClock(oracle)
    start = time.perf_counter()
    batch = clock.sample(detached(params))
    direction = gradient_of(oracle, as_leaves(params), batch)
    timings = {"sampling": clock.seconds, "adaptation": 0.0,
               "meta_gradient": time.perf_counter() - start - clock.seconds}
    return MetaGradient(detached(direction), detached(params), [batch], batch,
                        tree_norm(detached(direction), task_axis), timings)


def _hessian_vector_product(method: str, oracle: TaskOracle, theta: Params, grad: Params, batch: Any,
                            u: Params, hessian_batch: str, alpha: float, delta: float, delta_rule: str,
                            rho: float | None, task_axis: bool, difference: str) -> Params:
    if method == "maml":
        if hessian_batch == "independent":
            grad = gradient_of(oracle, theta, batch, create_graph=True)
        return exact_hvp(theta, grad, u)
    u_norm = tree_norm(u, task_axis)
    zero = u_norm == 0
    # A task whose u is exactly zero has H u = 0; any finite step gives that, an infinite one NaN.
    safe_norm = torch.where(zero, torch.ones_like(u_norm), u_norm)
    if delta_rule == "theory":
        assert rho is not None
        step = 1.0 / (6.0 * rho * alpha * safe_norm)
    else:
        step = delta / safe_norm
    # On a shared batch the inner step already computed grad S(theta_k; D_k): a forward difference reuses it.
    reusable = grad if hessian_batch == "shared" else None
    return finite_difference_hvp(oracle, detached(theta), batch, u, step, task_axis, difference, reusable)


def meta_gradient(
    method: str,
    oracle: TaskOracle,
    params: Params,
    *,
    inner_lr: float,
    inner_steps: int = 1,
    step_rule: str = "constant",
    hessian_batch: str = "shared",
    delta: float = 1e-3,
    delta_rule: str = "scaled",
    rho: float | None = None,
    difference: str = "central",
) -> Params:
    """The ascent direction of the MAML objective for one task, keyed like ``params``.

    Args:
        method: ``"maml"``, ``"fomaml"`` or ``"hfmaml"``.
        oracle: draws data (``sample``) and evaluates the differentiable objective (``objective``).
        params: the meta-parameters theta (not modified).
        inner_lr: the inner step size alpha_0.
        inner_steps: N >= 1 inner policy-gradient steps.
        step_rule: ``"constant"`` (alpha = alpha_0) or ``"inverse_steps"`` (alpha = alpha_0 / N).
        hessian_batch: ``"shared"`` (curvature from the inner step's batch) or ``"independent"``
            (a fresh batch at each theta_k); used by ``maml`` and ``hfmaml``.
        delta: delta_0 of HF-MAML's ``delta = delta_0 / ||u||``; 1e-3 suits smooth objectives, a policy with
            kinks (ReLU) needs more (the RL config's default is 0.1: docs/algorithms.md).
        delta_rule: ``"scaled"`` or ``"theory"`` (``delta = 1 / (6 rho alpha ||u||)``).
        rho: Lipschitz constant of the Hessian, for ``delta_rule="theory"``.
        difference: HF-MAML's ``"central"`` difference (Fallah et al.'s; error O(delta^2) for smooth
            surrogates) or ``"forward"`` (error O(delta); on a shared batch it reuses the inner
            step's gradient, one gradient per inner step instead of two).
    """
    return estimate_meta_gradient(
        method, oracle, params, inner_lr=inner_lr, inner_steps=inner_steps, step_rule=step_rule,
        hessian_batch=hessian_batch, delta=delta, delta_rule=delta_rule, rho=rho, difference=difference,
    ).direction


def adapt(oracle: TaskOracle, params: Params, *, inner_lr: float, steps: int, later_step_scale: float = 1.0,
          first_step_scale: float = 1.0,
          on_batch: Callable[[int, Any], None] | None = None) -> tuple[list[Params], list[Any]]:
    """``steps`` policy-gradient steps from ``params``, each on a fresh batch: the first of size
    ``first_step_scale * inner_lr``, the later ones of ``later_step_scale * inner_lr`` (Finn et al.'s
    test code takes them at half the inner step).

    Returns the parameters after 0..steps steps and the batches drawn at each of them
    (``steps + 1`` of each: the last batch measures the fully adapted parameters).
    ``on_batch(k, batch)`` is called as each batch arrives (for progress reports).
    """
    task_axis = bool(getattr(oracle, "task_axis", False))
    thetas, batches = [detached(params)], []
    for k in range(steps + 1):
        batches.append(oracle.sample(thetas[k]))
        if on_batch is not None:
            on_batch(k, batches[k])
        if k < steps:
            grad = gradient_of(oracle, as_leaves(thetas[k]), batches[k])
            step_size = inner_lr * (first_step_scale if k == 0 else later_step_scale)
            thetas.append(tree_axpy(thetas[k], step_size, grad, task_axis))
    return thetas, batches


def adapt_on(oracle: TaskOracle, params: Params, batches: list[Any], inner_lr: float,
             create_graph: bool = False) -> Params:
    """Replay the inner steps from ``params`` on given batches (one step per batch), without new
    data: ``theta_{k+1} = theta_k + alpha grad S(theta_k; D_k)``. Away from the parameters the
    batches were drawn at, this relies on the objective being importance weighted. With
    ``create_graph`` the result is differentiable in ``params``."""
    task_axis = bool(getattr(oracle, "task_axis", False))
    theta = params if create_graph else detached(params)
    for batch in batches:
        grad = gradient_of(oracle, theta if create_graph else as_leaves(theta), batch, create_graph=create_graph)
        theta = tree_axpy(theta, inner_lr, grad, task_axis)
    return theta
