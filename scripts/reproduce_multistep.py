"""Multi-step MAML (Ji, Yang & Liang 2020, https://arxiv.org/abs/2002.07836): the inner step must shrink as 1/N.

N-step MAML with a constant inner step alpha_0 gets worse as N grows (each extra step multiplies
the meta-gradient by another ``I + alpha H``, so the meta-objective's smoothness grows like
``(1 + alpha_0 L)^N``), and with a fixed outer step it eventually diverges; with
``alpha = alpha_0 / N`` (``step_rule="inverse_steps"``) every N keeps converging.

Problem: the rank-one matrix factorisation tasks of Fallah et al. (``metarl.estimators.synthetic``), exact gradients
and Hessians, all tasks every iteration; the N-step MAML meta-gradient is estimated by
``metarl.estimators.meta_gradient.meta_gradient`` (the code that also runs RL), the outer step is plain SGD with a fixed
step. The y axis is the norm of the EXACT gradient of the N-step MAML objective
``F_N(x) = mean_i J_i(theta_N^i(x))`` (each N and rule its own objective, with its own alpha),
computed by autograd through the closed form. A run whose norm becomes non-finite or exceeds
``blow_up`` is marked diverged.

    python scripts/reproduce_multistep.py [--out docs/reproductions] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metarl.estimators.meta_gradient import inner_step_size, meta_gradient
from metarl.estimators.synthetic import MatrixFactorisationOracle, factorisation_objective
from metarl.experiment.plotting import pyplot

RULES = ("constant", "inverse_steps")
RULE_TITLES = {"constant": "constant inner step alpha = alpha_0", "inverse_steps": "inner step alpha = alpha_0 / N"}
COMMAND = "python scripts/reproduce_multistep.py --seed {seed}"


@dataclass(frozen=True)
class Setup:
    """The experiment's settings."""

    dim: int = 10
    tasks: int = 20
    task_spread: float = 0.3  # s: g_i = mu + s z_i
    noise: float = 0.0  # sigma_g = sigma_h (0: exact gradients and Hessians)
    inner_lr: float = 0.4  # alpha_0
    outer_lr: float = 0.3  # beta
    iterations: int = 500
    replicas: int = 5
    steps: tuple[int, ...] = (1, 2, 4, 8)
    blow_up: float = 1e6  # a meta-gradient norm above this counts as diverged


def make_tasks(setup: Setup, generator: torch.Generator) -> Tensor:
    """``g`` of shape (replicas, tasks, dim): ``mu + s z`` with ``mu`` the unit vector along (1, ..., 1)."""
    mu = torch.full((setup.dim,), setup.dim**-0.5, dtype=torch.float64)
    z = torch.randn((setup.replicas, setup.tasks, setup.dim), generator=generator, dtype=torch.float64)
    return mu + setup.task_spread * z


def initial_point(setup: Setup, generator: torch.Generator) -> Tensor:
    """A random start per replica, shape (replicas, dim), of norm about 1."""
    return torch.randn((setup.replicas, setup.dim), generator=generator, dtype=torch.float64) / setup.dim**0.5


def exact_meta_gradient_norm(x: Tensor, g: Tensor, inner_lr: float, inner_steps: int) -> Tensor:
    """``||grad F_N(x)||`` per replica, ``F_N(x) = mean_i J_i(theta_N^i(x))`` with exact inner gradient steps.

    ``x``: (replicas, dim), ``g``: (replicas, tasks, dim). Autograd through the closed form.
    """
    x = x.detach().requires_grad_(True)
    theta = x.unsqueeze(1).expand_as(g)
    for _ in range(inner_steps):
        (grad,) = torch.autograd.grad(factorisation_objective(theta, g).sum(), theta, create_graph=True)
        theta = theta + inner_lr * grad
    (meta_grad,) = torch.autograd.grad(factorisation_objective(theta, g).mean(1).sum(), x)
    return meta_grad.norm(dim=-1)


def train(rule: str, inner_steps: int, setup: Setup, seed: int) -> Tensor:
    """N-step MAML with ``rule``; the exact meta-gradient norm per iteration, shape (iterations + 1, replicas).

    A replica's entries are ``inf`` from the iteration at which it diverged. Every (rule, N) sees the
    same tasks and start for a given seed.
    """
    generator = torch.Generator().manual_seed(seed)
    g = make_tasks(setup, generator)
    x = initial_point(setup, generator)
    alpha = inner_step_size(setup.inner_lr, inner_steps, rule)  # the alpha meta_gradient uses, for the reference
    norms = torch.full((setup.iterations + 1, setup.replicas), math.inf, dtype=torch.float64)
    diverged = torch.zeros(setup.replicas, dtype=torch.bool)
    for iteration in range(setup.iterations + 1):
        norm = exact_meta_gradient_norm(x, g, alpha, inner_steps)
        diverged |= ~torch.isfinite(norm) | (norm > setup.blow_up)
        norms[iteration] = torch.where(diverged, math.inf, norm)
        if diverged.all() or iteration == setup.iterations:
            break
        oracle = MatrixFactorisationOracle(g.reshape(-1, setup.dim), setup.noise, setup.noise,
                                           seed=seed * 1_000_003 + iteration)
        params = {"x": x.repeat_interleave(setup.tasks, dim=0)}  # one copy of x per task
        direction = meta_gradient("maml", oracle, params, inner_lr=setup.inner_lr, inner_steps=inner_steps,
                                  step_rule=rule)["x"]
        x = x + setup.outer_lr * direction.view(setup.replicas, setup.tasks, -1).mean(1)  # ascent on J
    return norms


def run(setup: Setup = Setup(), seed: int = 0) -> dict[tuple[str, int], Tensor]:
    """All (rule, N) curves."""
    return {(rule, n): train(rule, n, setup, seed) for rule in RULES for n in setup.steps}


def first_divergence(curve: Tensor) -> int | None:
    """The first iteration at which some replica had diverged, or None."""
    bad = torch.isinf(curve).any(1).nonzero()
    return int(bad[0]) if len(bad) else None


def describe(curve: Tensor) -> tuple[str, str, str]:
    """Final norm: median (or 'diverged'), min-max over the replicas still finite, diverged replicas and when."""
    final = curve[-1]
    finite = final[torch.isfinite(final)]
    median = final.median().item()
    value = "**diverged**" if math.isinf(median) else f"{median:.2e}"
    spread = f"{finite.min().item():.1e} - {finite.max().item():.1e}" if len(finite) else "-"
    count = len(final) - len(finite)
    where = "0" if count == 0 else f"{count}/{len(final)} (first at iteration {first_divergence(curve)})"
    return value, spread, where


def results_table(curves: dict[tuple[str, int], Tensor], setup: Setup) -> str:
    """Markdown table: initial and final exact meta-gradient norms."""
    lines = ["| inner step rule | N | alpha | initial norm (median) | final norm (median) | final, finite replicas "
             "(min - max) | diverged replicas |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (rule, n), curve in curves.items():
        value, spread, where = describe(curve)
        alpha = inner_step_size(setup.inner_lr, n, rule)
        lines.append(f"| {rule} | {n} | {alpha:.3g} | {curve[0].median().item():.2e} | {value} | {spread} | {where} |")
    return "\n".join(lines)


def plot(curves: dict[tuple[str, int], Tensor], setup: Setup, path: Path) -> None:
    """One panel per rule, one line per N (median over replicas); an x where the median run diverged."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(RULES), figsize=(11, 4), sharey=True, constrained_layout=True)
    for ax, rule in zip(axes, RULES):
        for i, n in enumerate(setup.steps):
            median = curves[(rule, n)].median(1).values
            finite = torch.isfinite(median)
            label = f"N = {n}, alpha = {inner_step_size(setup.inner_lr, n, rule):.3g}"
            ax.plot(torch.arange(len(median))[finite], median[finite], color=f"C{i}", lw=1.5, label=label)
            if not finite.all():  # mark the last finite point of a diverged median
                last = int(finite.nonzero().max()) if finite.any() else 0
                height = median[last].item() if finite.any() else setup.blow_up
                ax.plot(last, height, "x", color=f"C{i}", ms=10, mew=2)
                ax.annotate("diverged", (last, height), textcoords="offset points", xytext=(6, 4), color=f"C{i}")
        ax.set(yscale="log", xlabel="outer iteration", title=RULE_TITLES[rule])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="lower left")
    axes[0].set_ylabel("exact N-step MAML meta-gradient norm")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(path: Path, table: str, setup: Setup, seed: int) -> None:
    """The reproduction page (the discussion is written for the default settings)."""
    text = f"""# Multi-step MAML needs an inner step of order 1/N (Ji, Yang & Liang 2020)

Ji, Yang & Liang prove convergence of N-step MAML when the inner step is chosen inversely
proportional to N; with a constant inner step the meta-gradient's Lipschitz constant grows like
`(1 + alpha L)^N`, so for a fixed outer step N-step MAML gets worse, and eventually diverges, as N
grows. Here N-step MAML runs on the rank-one matrix factorisation tasks of Fallah et al. with exact
gradients and Hessians, with `step_rule="constant"` (alpha = alpha_0) and
`step_rule="inverse_steps"` (alpha = alpha_0 / N) of `metarl.estimators.meta_gradient.meta_gradient` (the estimator
code that also runs RL), and a plain SGD outer step of fixed size. The y axis is the norm of the
exact gradient of each run's own N-step MAML objective `F_N(x) = mean_i J_i(theta_N^i(x))`,
computed by autograd through the closed form; lines are medians over {setup.replicas} replicas
(independent tasks and start), an x marks where the median run diverged (non-finite, or a norm
above {setup.blow_up:g}).

![multi-step MAML](multistep.png)

Command (from the repository root, with `metarl` importable, e.g. after `make install`):

```bash
{COMMAND.format(seed=seed)}
```

Settings: d = {setup.dim}, {setup.tasks} tasks `g_i = mu + s z_i` with s = {setup.task_spread} and
mu = (1, ..., 1) / sqrt(d), all tasks every iteration, sigma_g = sigma_h = {setup.noise} (exact),
alpha_0 = {setup.inner_lr}, outer SGD step beta = {setup.outer_lr}, {setup.iterations} iterations,
start x_0 ~ N(0, I/d), method `maml` (exact Hessian-vector products).

Exact meta-gradient norm of `F_N` (median over replicas) at the start and after the last iteration:

{table}

How it matches Ji, Yang & Liang (for the default settings): with the constant step, one and two inner
steps still converge (two more slowly), four steps are left far behind (median meta-gradient
norm about 2e-2 after the last iteration, worst replica 0.25, against at most 2.4e-7 with
alpha_0 / N), and with eight steps three of the five replicas diverge within the first
iterations while the other two stall near 0.1. The inner gradient steps overshoot: \
`alpha_0 * lambda_max(Hessian of f_i at g_i) =
2 alpha_0 ||g_i||^2` exceeds 2 for 10-20% of the tasks, so the inner iterates of those tasks
oscillate instead of converging and each extra step multiplies their meta-gradient by an
`I + alpha H` of norm above one, the `(1 + alpha L)^N` growth of the theory. With alpha_0 / N every
N converges with the same outer step, as the theory says; each N has its own objective and its
own rate, and N = 8 is the slowest here (three orders of magnitude in {setup.iterations} iterations).
"""
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and leaves the other core free
    start = time.perf_counter()
    setup = Setup()
    curves = run(setup, args.seed)
    seconds = time.perf_counter() - start
    table = results_table(curves, setup)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, setup, args.out / "multistep.png")
    write_markdown(args.out / "multistep.md", table, setup, args.seed)
    print(table)
    print(f"{seconds:.1f} s; wrote {args.out / 'multistep.png'} and {args.out / 'multistep.md'}")


if __name__ == "__main__":
    main()
