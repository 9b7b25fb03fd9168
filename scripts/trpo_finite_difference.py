"""What direction Finn et al.'s TRPO step takes: their finite-difference Fisher product in float32.

Finn et al.'s code (cbfinn/maml_rl, ``sandbox/rocky/tf/optimizers/conjugate_gradient_optimizer.py``)
multiplies by the KL's Hessian with a symmetric finite difference of the KL's gradient,
``[grad KL(theta + eps x) - grad KL(theta - eps x)] / (2 eps) + 1e-5 x`` with
``eps = base_eps / ||theta||``, on float32 parameters. Its ``ConjugateGradientOptimizer`` builds the
product as ``FiniteDifferenceHvp(num_slices)``, whose first parameter is ``base_eps``: with the default
``num_slices = 1`` the code ran with ``base_eps = 1`` (the class's own default, 1e-8, is never used).
This script repeats that product and its 10 conjugate-gradient iterations on one meta-batch of a run
(the KL of the adapted policies, through the inner step, as their MAML graph has it) and compares the
direction it returns with the meta-gradient ``g`` and with the exact natural-gradient direction (the
same iterations on the exact product). It also counts how many parameters ``theta + eps x`` changes at
all in float32. Example::

    python scripts/trpo_finite_difference.py runs/reproduce-halfcheetah-dir/maml-seed1 --iterations 1 2 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.estimators.meta_gradient import adapt_on, estimate_meta_gradient, inner_step_size
from metarl.experiment.build import build_oracle
from metarl.experiment.config import load_config
from metarl.experiment.metrics import append_section
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.outer.trpo import conjugate_gradient
from metarl.params import (
    flatten,
    stack_params,
    unflatten,
)

PAGE_HEADER = """# The direction of Finn et al.'s TRPO step

Finn et al.'s code multiplies by the KL's Hessian with a symmetric finite difference of the KL's
gradient, `eps = base_eps / ||theta||`, on float32 parameters
(`sandbox/rocky/tf/optimizers/conjugate_gradient_optimizer.py`, `FiniteDifferenceHvp`, the default of
its `ConjugateGradientOptimizer`). That optimizer builds it as `FiniteDifferenceHvp(num_slices)`, and
the first parameter is `base_eps`: the code ran with `base_eps = 1` (`--base-eps 1`, the default
here), not the class's default 1e-8. Each section below was written by
`scripts/trpo_finite_difference.py --out` (its command is the heading): that product's 10
conjugate-gradient iterations repeated on one meta-batch of the run's family, and the direction
they return beside the meta-gradient `g` (and, with `--exact`, the exact product's direction: the
same KL's Hessian by automatic differentiation, `J^T F J`, our `outer.metric: adapted`). The
last column is the share of parameters that `theta + eps x` changes at all in float32, at each
product.
"""
KEY_OFFSET = 10**6  # rollouts no training iteration used
BASE_EPS = 1.0  # FiniteDifferenceHvp(num_slices=1): num_slices lands in base_eps
REG_COEFF = 1e-5  # ConjugateGradientOptimizer's reg_coeff


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--params", type=Path, default=None, help="parameters to look at (default: the run's)")
    parser.add_argument("--method", default="maml", choices=("maml", "fomaml"))
    parser.add_argument("--iterations", type=int, nargs="+", default=[7], help="whose meta-batches of tasks to draw")
    parser.add_argument("--exact", action="store_true", help="also the exact product's direction (slow)")
    parser.add_argument("--base-eps", type=float, default=BASE_EPS,
                        help="eps = base_eps / ||theta|| (default 1, as Finn et al.'s code ran; 1e-8 is the class's "
                             "default, which their optimizer does not pass)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also append the table, under the command that made it, to this markdown page")
    args = parser.parse_args()
    if not args.base_eps > 0:
        parser.error(f"--base-eps must be > 0, got {args.base_eps}")
    torch.set_num_threads(1)
    config = load_config(args.run_dir / "config.yaml", ["train.dtype=float32", "train.device=cpu"])  # as theirs were
    lines = ["| meta-batch | ‖g‖ | product | cos(x, g) | ‖x‖ / ‖g‖ | x^T M x | share of parameters moved |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # ‖..‖: a plain || would split the cells
    print("\n".join(lines), flush=True)
    with MetaTrainer(config, load_params(args.params or args.run_dir / PARAMS_FILE)) as trainer:
        for iteration in args.iterations:
            for row in compare(trainer, iteration, args.method, args.exact, args.base_eps):
                print(row, flush=True)
                lines.append(row)
    if args.out is not None:
        append_section(args.out, PAGE_HEADER, "scripts/trpo_finite_difference.py", sys.argv[1:], "\n".join(lines))


def compare(trainer: MetaTrainer, iteration: int, method: str, with_exact: bool,
            base_eps: float = BASE_EPS) -> list[str]:
    """The table rows of one meta-batch: each product's conjugate-gradient direction against g."""
    config = trainer.config
    meta = config.meta
    alpha, steps = inner_step_size(meta.inner_lr, meta.inner_steps, meta.inner_step_rule), meta.inner_steps
    params = {k: v.detach().float() for k, v in trainer.params.items()}
    tasks = trainer.sample_tasks(iteration)
    oracle = build_oracle(config, trainer.sampler, tasks, (TRAINING_ROLLOUT_STREAM, KEY_OFFSET + iteration))
    estimate = estimate_meta_gradient(method, oracle, stack_params(params, len(tasks)), inner_lr=meta.inner_lr,
                                      inner_steps=steps, step_rule=meta.inner_step_rule,
                                      hessian_batch=meta.hessian_batch)
    gradient = flatten({k: v.mean(0) for k, v in estimate.direction.items()}).detach()
    with torch.no_grad():
        old = oracle.distributions(estimate.adapted, estimate.outer_batch)

    def mean_kl(flat: Tensor) -> Tensor:
        """The mean KL of the adapted policies, re-adapted from ``flat`` through the inner steps."""
        stacked = {k: v.unsqueeze(0).expand(len(tasks), *v.shape) for k, v in unflatten(flat, params).items()}
        adapted = adapt_on(oracle, stacked, estimate.inner_batches[:steps], alpha, create_graph=True)
        return oracle.kl(old, adapted, estimate.outer_batch).mean()

    def kl_gradient(flat: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        leaf = flat.detach().clone().requires_grad_(True)
        return leaf, torch.autograd.grad(mean_kl(leaf), leaf, create_graph=create_graph)[0]

    theta = flatten(params)
    eps = torch.tensor(base_eps, dtype=torch.float32) / (theta.norm() + 1e-8)
    moved: list[float] = []

    def finite_difference(x: Tensor) -> Tensor:
        plus, minus = theta + eps * x, theta - eps * x  # float32, as set_param_values stores them
        moved.append(float((plus != theta).float().mean()))
        return (kl_gradient(plus)[1] - kl_gradient(minus)[1]) / (2 * eps) + REG_COEFF * x

    def exact(x: Tensor) -> Tensor:
        leaf, grad = kl_gradient(theta, create_graph=True)
        return torch.autograd.grad(grad @ x, leaf)[0] + REG_COEFF * x

    rows = []
    products = [("finite difference, float32", finite_difference)] + ([("exact", exact)] if with_exact else [])
    for name, product in products:
        moved.clear()
        direction, _ = conjugate_gradient(product, gradient, iterations=10)
        curvature = float(direction @ product(direction))
        rows.append((name, direction, curvature, list(moved)))
    return [f"| {iteration} | {gradient.norm():.4g} | {name} | {cosine(direction, gradient):.4f} | "
            f"{direction.norm() / gradient.norm():.4g} | {curvature:.4g} | {', '.join(f'{s:.2g}' for s in shares)} |"
            for name, direction, curvature, shares in rows]


if __name__ == "__main__":
    main()
