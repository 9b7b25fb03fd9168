"""TRPO as the outer (meta) update, as in MAML-RL (Finn et al. 2017).

The trust region is measured on the *post-adaptation* policies of the meta-batch. With ``g`` the
averaged meta-gradient from any estimator (MAML, FO-MAML, HF-MAML) and ``M`` a metric (Fisher
matrix) for the mean KL between the adapted policies before and after the step::

    x = M^{-1} g                         (conjugate gradient on metric-vector products)
    step = sqrt(2 max_kl / x^T M x) * x
    theta_new = theta + ratio^j * step,  the first j whose re-adapted policies improve the
                                         surrogate on D_out and stay within max_kl of the old ones

Two line searches (``line_search``):

* ``"predicted"`` (default): the metric's quadratic model of the KL can be off by a large factor
  (``"post"`` ignores how the adaptation amplifies a step), and each candidate costs a
  re-adaptation, so the search starts at the candidate that the model, rescaled by the ratio of
  measured to predicted KL at the previous accepted step, puts within the bound; after a candidate
  over the bound it skips those whose KL, extrapolated quadratically from it, would still exceed
  the bound. Once a step's KL came out even slightly above the model's, the next search starts
  at ``ratio * step``.
* ``"plain"``: ``j = 0, 1, 2, ...`` one at a time, every step starting from the full one, as
  Schulman et al.'s and Finn et al.'s code search (rllab's ``ConjugateGradientOptimizer``).

Re-adaptation at a candidate replays the inner steps on the stored inner batches, without new
rollouts (``replay``):

* ``"dice"`` (default): with the oracle's own surrogate. With DiCE this is the importance-weighted
  adaptation map whose derivative the MAML direction contains, so a small enough step along it
  improves what the search measures. Its weights are products of the ratios over a whole
  episode, which overflow on long episodes of many action dimensions (the locomotion families):
  there no candidate is accepted.
* ``"ratio"``: with the per-step importance-ratio surrogate ``sum_t exp(l_t - l_t^b) Psi_t``,
  whose gradient at the sampling parameters is the same policy gradient and which stays bounded
  away from them (the reference implementations re-adapt with the plain score-function
  surrogate, no ratio at all). Its map lacks DiCE's score-product terms, so it is only a proxy of
  what the direction ascends (docs/trpo.md has what that costs on navigation).

The line search measures the true KL of the re-adapted policies, so the bound holds whatever
metric chose the direction.

Two metrics (``metric``), both products of second derivatives by double backward, never a matrix:

* ``"post"``: ``F``, the Fisher matrix of the adapted policies on D_out, as if the adaptation were
  the identity (``J = I``). Cheap; the line search corrects the step length.
* ``"adapted"``: ``J^T F J`` with ``J = prod_k (I + alpha H_k)`` the adaptation's Jacobian, the
  exact second-order expansion of the KL in the meta-parameters (what the reference implementation
  of Finn et al. computes). Each product costs two Hessian-vector products per inner step on the
  inner batches: slower than ``"post"``, and its step gains more per unit of KL (see
  ``docs/trpo.md``).

The Fisher part may use only the first ``metric_episodes`` episodes of each task (the metric is an
average over states; OpenAI Baselines' TRPO subsamples it the same way), and the whole metric only the
first ``metric_tasks`` tasks of the meta-batch (it is an average over tasks drawn independently, so
these are a random subset; rllab's ``ConjugateGradientOptimizer`` subsamples its product's data in
the same spirit, ``subsample_factor``, 1 in Finn et al.'s runs). Each cuts the cost of a product in
proportion; the line search still measures the KL on every task and episode.

Two directions (``direction``):

* ``"natural"`` (default): ``x = M^{-1} g`` by conjugate gradient, TRPO as Schulman et al. (2015,
  https://arxiv.org/abs/1502.05477) define it.
* ``"gradient"``: ``x = g``; the metric only sets the length, ``sqrt(2 max_kl / g^T M g)``, and the
  same line search follows. An ablation: Finn et al.'s code steps along the natural direction too (its
  finite-difference metric product, ``eps = 1 / ||theta||``, gives the exact product's direction to
  three digits; ``scripts/trpo_finite_difference.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from metarl.estimators.meta_gradient import MetaGradient, adapt_on, exact_hvp, gradient_of
from metarl.outer.optimizers import OuterOptimizer, StepInputs
from metarl.params import Params, as_leaves, flatten, stack_params, unflatten

Metric = Literal["post", "adapted"]
METRICS = ("post", "adapted")
Replay = Literal["dice", "ratio"]
REPLAYS = ("dice", "ratio")
Direction = Literal["natural", "gradient"]
DIRECTIONS = ("natural", "gradient")
LineSearch = Literal["predicted", "plain"]
LINE_SEARCHES = ("predicted", "plain")


class RatioReplay:
    """``oracle`` with the per-step importance-ratio surrogate as its objective: the map the line
    search re-adapts candidates with when ``replay="ratio"`` (see the module docstring)."""

    def __init__(self, oracle: TrustRegionOracle) -> None:
        self.oracle, self.task_axis = oracle, oracle.task_axis

    def objective(self, params: Params, batch: Any) -> Tensor:
        return self.oracle.ratio_objective(params, batch)


class TrustRegionOracle(Protocol):
    """A task-batched oracle that can also measure the KL between two parameter sets."""

    task_axis: bool

    def objective(self, params: Params, batch: Any) -> Tensor: ...

    def distributions(self, params: Params, batch: Any) -> tuple[Tensor, ...]:
        """The policy's distribution parameters at every step of the batch."""

    def ratio_objective(self, params: Params, batch: Any, outputs: tuple[Tensor, ...] | None = None) -> Tensor:
        """The per-step importance-ratio surrogate, summed over tasks (what the line search improves)."""

    def kl(self, old: Params | tuple[Tensor, ...], new: Params | tuple[Tensor, ...], batch: Any) -> Tensor:
        """Mean KL(pi_old || pi_new) over the batch's steps, per task (shape (B,))."""


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10,
                       tolerance: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``.

    Returns ``x`` and ``A x`` (tracked through the residual, no extra product).
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = residual @ residual
    for _ in range(iterations):
        if residual_sq <= tolerance:
            break
        product = matvec(direction)
        step = residual_sq / (direction @ product)
        x += step * direction
        residual -= step * product
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x, b - residual


def task_range(batch: Any, start: int, stop: int) -> Any:
    """The batch restricted to tasks ``start .. stop - 1`` (axis 1 of every (T, B, M) tensor)."""
    take = {f.name: getattr(batch.episodes, f.name)[:, start:stop] for f in fields(batch.episodes)}
    return replace(batch, episodes=replace(batch.episodes, **take), old_log_probs=batch.old_log_probs[:, start:stop],
                   advantages=batch.advantages[:, start:stop], values=batch.values[:, start:stop],
                   scale=None if batch.scale is None else batch.scale[start:stop])


def first_episodes(batch: Any, episodes: int | None) -> Any:
    """The batch restricted to the first ``episodes`` episodes of every task (all if None)."""
    if episodes is None or episodes >= batch.episodes.episodes_per_task:
        return batch
    take = {f.name: getattr(batch.episodes, f.name)[:, :, :episodes] for f in fields(batch.episodes)}
    return replace(batch, episodes=replace(batch.episodes, **take), old_log_probs=batch.old_log_probs[:, :, :episodes],
                   advantages=batch.advantages[:, :, :episodes], values=batch.values[:, :, :episodes])


class TrustRegionMetric:
    """``v -> mean_i J_i^T F_i J_i v + damping v`` for the meta-batch of ``estimate``.

    ``F_i`` is the Hessian of the mean KL of task i's adapted policy on (the first
    ``metric_episodes`` episodes of) D_out, and the mean is over (the first ``metric_tasks`` of) the
    tasks; ``J_i`` is the identity for ``metric="post"`` and the adaptation's Jacobian for
    ``metric="adapted"``. The graphs are built once, for ``task_chunk`` tasks each (None: all in one);
    every product then costs backward passes only. The products are the same whatever the chunk, up
    to float rounding (which a long training amplifies into a different run); several small graphs
    run faster than one big one (``scripts/benchmark_trpo_metric.py``).
    """

    def __init__(self, oracle: TrustRegionOracle, params: Params, estimate: MetaGradient, inner_lr: float,
                 inner_steps: int, damping: float, metric: Metric = "post", metric_episodes: int | None = None,
                 metric_tasks: int | None = None, task_chunk: int | None = None) -> None:
        if metric not in METRICS:
            raise ValueError(f"TRPO metric {metric!r} is unknown; allowed: {', '.join(METRICS)}")
        self.params, self.damping = params, damping
        all_tasks = next(iter(estimate.adapted.values())).shape[0]
        self.tasks = all_tasks if metric_tasks is None else min(metric_tasks, all_tasks)
        task_chunk = task_chunk or self.tasks
        self.chunks = [_TaskChunk(oracle, params, estimate, range(start, min(start + task_chunk, self.tasks)),
                                  self.tasks, inner_lr, inner_steps if metric == "adapted" else 0, metric_episodes)
                       for start in range(0, self.tasks, task_chunk)]

    def __call__(self, flat: Tensor) -> Tensor:
        tangent = unflatten(flat, self.params)
        product = sum(flatten(chunk(tangent)) for chunk in self.chunks)
        return product.detach() + self.damping * flat


class _TaskChunk:
    """The graphs of a range of tasks: ``v -> sum_i J_i^T F_i J_i v / tasks`` over them (``J = I``
    when ``inner_steps`` is 0)."""

    def __init__(self, oracle: TrustRegionOracle, params: Params, estimate: MetaGradient, tasks: range,
                 all_tasks: int, inner_lr: float, inner_steps: int, metric_episodes: int | None) -> None:
        self.inner_lr, self.size = inner_lr, len(tasks)
        self.points: list[Params] = []
        self.gradients: list[Params] = []
        theta = stack_params(params, self.size)
        for batch in estimate.inner_batches[:inner_steps]:
            leaf = as_leaves(theta)
            grad = gradient_of(oracle, leaf, task_range(batch, tasks.start, tasks.stop), create_graph=True)
            self.points.append(leaf)
            self.gradients.append(grad)
            theta = {k: leaf[k].detach() + inner_lr * grad[k].detach() for k in leaf}
        adapted = {k: v[tasks.start:tasks.stop].detach() for k, v in estimate.adapted.items()}
        self.adapted = as_leaves(adapted)
        outer = first_episodes(task_range(estimate.outer_batch, tasks.start, tasks.stop), metric_episodes)
        kl = oracle.kl(adapted, self.adapted, outer).sum() / all_tasks
        self.kl_gradient = dict(zip(self.adapted, torch.autograd.grad(kl, list(self.adapted.values()),
                                                                      create_graph=True)))

    def _jacobian(self, vector: Params, transpose: bool) -> Params:
        order = range(len(self.points))
        for k in (reversed(order) if transpose else order):
            hvp = exact_hvp(self.points[k], self.gradients[k], vector, retain_graph=True)
            vector = {name: vector[name] + self.inner_lr * hvp[name] for name in vector}
        return vector

    def __call__(self, tangent: Params) -> Params:
        pushed = self._jacobian(stack_params(tangent, self.size), transpose=False)
        fisher = exact_hvp(self.adapted, self.kl_gradient, pushed, retain_graph=True)
        return {k: v.sum(0) for k, v in self._jacobian(fisher, transpose=True).items()}


class TRPO(OuterOptimizer):
    """Trust-region meta-update on the post-adaptation policies.

    Args:
        inner_lr: the inner step alpha (to re-adapt candidate parameters).
        inner_steps: N, the number of inner steps (0: no adaptation, plain TRPO).
        max_kl: the trust region's radius in mean KL.
        cg_iterations: conjugate-gradient iterations.
        cg_damping: ``M + damping * I`` is inverted.
        line_search_steps: candidate step fractions tried, ``ratio^0 .. ratio^(steps-1)``.
        line_search_ratio: shrink factor between candidates.
        line_search: ``"predicted"`` (start and skip where the KL model predicts) or ``"plain"`` (every
            candidate from the full step; see the module docstring).
        metric: ``"post"`` or ``"adapted"`` (see the module docstring).
        metric_episodes: episodes per task of D_out in the metric (None: all).
        metric_tasks: tasks of the meta-batch in the metric, the first ones (None: all).
        metric_task_chunk: tasks per graph of the metric (None: all in one graph; the same products
            up to float rounding, faster in chunks: see :class:`TrustRegionMetric`).
        replay: how the line search re-adapts a candidate, ``"dice"`` or ``"ratio"`` (see the module
            docstring).
        direction: ``"natural"`` (``x = M^{-1} g`` by conjugate gradient) or ``"gradient"`` (``x = g``,
            the metric only sets the step's length; see the module docstring).
    """

    def __init__(self, inner_lr: float, inner_steps: int = 1, max_kl: float = 0.01, cg_iterations: int = 10,
                 cg_damping: float = 1e-5, line_search_steps: int = 15, line_search_ratio: float = 0.8,
                 line_search: LineSearch = "predicted", metric: Metric = "post",
                 metric_episodes: int | None = None, replay: Replay = "dice", direction: Direction = "natural",
                 metric_tasks: int | None = None, metric_task_chunk: int | None = None) -> None:
        if metric not in METRICS:
            raise ValueError(f"TRPO metric {metric!r} is unknown; allowed: {', '.join(METRICS)}")
        if replay not in REPLAYS:
            raise ValueError(f"TRPO replay {replay!r} is unknown; allowed: {', '.join(REPLAYS)}")
        if direction not in DIRECTIONS:
            raise ValueError(f"TRPO direction {direction!r} is unknown; allowed: {', '.join(DIRECTIONS)}")
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"TRPO line search {line_search!r} is unknown; allowed: {', '.join(LINE_SEARCHES)}")
        self.replay, self.direction, self.line_search = replay, direction, line_search
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.max_kl, self.cg_iterations, self.cg_damping = max_kl, cg_iterations, cg_damping
        self.line_search_steps, self.line_search_ratio = line_search_steps, line_search_ratio
        self.metric, self.metric_episodes, self.metric_tasks = metric, metric_episodes, metric_tasks
        self.metric_task_chunk = metric_task_chunk
        self.kl_scale = 1.0  # measured KL / the metric's quadratic prediction, at the last accepted step

    def step(self, params: Params, direction: Params, inputs: StepInputs | None = None) -> dict[str, Any]:
        if inputs is None or inputs.estimate is None or inputs.oracle is None:
            raise ValueError("TRPO needs the meta-gradient estimate and the oracle that drew its batches")
        estimate, oracle = inputs.estimate, inputs.oracle
        gradient = flatten(direction)
        metric = TrustRegionMetric(oracle, params, estimate, self.inner_lr, self.inner_steps,
                                   self.cg_damping, self.metric, self.metric_episodes, self.metric_tasks,
                                   self.metric_task_chunk)
        if self.direction == "gradient":
            search, product = gradient, metric(gradient)
        else:
            search, product = conjugate_gradient(metric, gradient, self.cg_iterations)
        curvature = search @ product
        if not torch.isfinite(curvature) or curvature <= 0:
            return self._rejected(0)
        full_step = torch.sqrt(2 * self.max_kl / curvature) * search
        return self._line_search(oracle, params, full_step, estimate, gradient)

    def _rejected(self, tried: int) -> dict[str, Any]:
        return {"step_size": 0.0, "step_norm": 0.0, "kl": 0.0, "improvement": 0.0, "line_search_steps": tried,
                "accepted": False}

    def _line_search(self, oracle: TrustRegionOracle, params: Params, full_step: Tensor, estimate: MetaGradient,
                     gradient: Tensor) -> dict[str, Any]:
        tasks = next(iter(estimate.adapted.values())).shape[0]
        inner_batches = estimate.inner_batches[:self.inner_steps]
        outer = estimate.outer_batch
        old_flat = flatten(params).detach()
        with torch.no_grad():
            old_outputs = oracle.distributions(estimate.adapted, outer)
            old_value = oracle.ratio_objective(estimate.adapted, outer, old_outputs) / tasks
        replay = RatioReplay(oracle) if self.replay == "ratio" else oracle
        j = self._first_notch()
        while j < self.line_search_steps:
            fraction = self.line_search_ratio**j
            candidate = unflatten(old_flat + fraction * full_step, params)
            adapted = adapt_on(replay, stack_params(candidate, tasks), inner_batches, self.inner_lr)
            with torch.no_grad():
                outputs = oracle.distributions(adapted, outer)
                improvement = oracle.ratio_objective(adapted, outer, outputs) / tasks - old_value
                kl = oracle.kl(old_outputs, outputs, outer).mean()
            if torch.isfinite(improvement) and improvement > 0 and kl <= self.max_kl:
                with torch.no_grad():
                    for k in params:
                        params[k].copy_(candidate[k])
                self.kl_scale = float(kl) / (fraction**2 * self.max_kl)
                step_norm = float(fraction * full_step.norm())
                return {"step_size": step_norm / max(float(gradient.norm()), 1e-12), "step_norm": step_norm,
                        "kl": float(kl), "improvement": float(improvement), "line_search_steps": j + 1,
                        "accepted": True}
            j += self._notches_to_skip(float(kl))
        return self._rejected(self.line_search_steps)

    def _first_notch(self) -> int:
        """Where backtracking starts: the full step (``plain``), or the largest candidate whose KL,
        predicted by the metric's quadratic model times the ratio measured at the last accepted step,
        is within max_kl."""
        if self.line_search == "plain" or self.kl_scale <= 1:
            return 0
        return min(self.line_search_steps - 1, self._notches_to_skip(self.kl_scale * self.max_kl))

    def state_dict(self) -> dict[str, Any]:
        return {"kl_scale": self.kl_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_scale = float(state["kl_scale"])

    def _notches_to_skip(self, kl: float) -> int:
        """How far to backtrack after a rejected candidate: one notch, or as many as it takes for its
        KL, extrapolated quadratically in the step length, to fall within max_kl (KL grows like the
        step's square near the old parameters; skipped candidates would be re-adapted for nothing).
        Always one notch for the ``plain`` search."""
        if self.line_search == "plain" or not math.isfinite(kl) or kl <= self.max_kl:
            return 1
        return max(1, math.ceil(math.log(self.max_kl / kl) / (2 * math.log(self.line_search_ratio))))
