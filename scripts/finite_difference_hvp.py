"""How well HF-MAML's finite difference of gradients matches the exact Hessian-vector product on a run's rollouts.

Fallah, Mokhtari & Ozdaglar (2020), https://arxiv.org/abs/1908.10400, replace MAML's ``H u`` by
``[grad S(theta + delta u) - grad S(theta - delta u)] / (2 delta)`` with ``delta = delta_0 / ||u||``. On one
batch of a run's rollouts, at its parameters, for a random direction ``u`` per task, this prints the
difference's relative error against the exact product (double backward) for several ``delta_0``, with the
surrogate evaluated in float32 (as in training) and in float64. For a smooth policy the error is
O(delta^2) in float64 and bounded below by rounding in float32; where it is the same in both precisions it
is not rounding. Example::

    python scripts/finite_difference_hvp.py runs/reproduce-halfcheetah-vel-hfmaml-adapted/hfmaml-seed1
    python scripts/finite_difference_hvp.py runs/reproduce-halfcheetah-vel-hfmaml-adapted/hfmaml-seed1 \
        --set policy.activation=tanh
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.estimators.meta_gradient import exact_hvp, finite_difference_hvp, gradient_of
from metarl.experiment.build import build_oracle
from metarl.experiment.config import load_config
from metarl.experiment.metrics import append_section
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.params import Params, as_leaves, flatten, stack_params, tree_norm
from metarl.rl.sampling import Episodes
from metarl.rl.surrogates import PolicyGradientBatch

KEY_OFFSET = 2 * 10**6  # rollouts no training iteration used
DELTAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
PAGE_HEADER = """# HF-MAML's finite difference against the exact Hessian-vector product

Each section below was written by the command in its heading. `scripts/finite_difference_hvp.py`: on one
batch of a run's rollouts, at its parameters, the relative error `|FD - Hu| / |Hu|` of HF-MAML's central
difference of gradients (Fallah, Mokhtari & Ozdaglar 2020, https://arxiv.org/abs/1908.10400), with
`delta = delta_0 / ||u||`, against the exact product by double backward, for a random direction `u` per task,
with the surrogate in float32 (as in training) and float64. `scripts/meta_gradient_parts.py --hfmaml`: HF-MAML's
second-order part of the meta-gradient (its direction minus FO-MAML's) against MAML's, on the same rollouts.
"""


def in_dtype(batch: PolicyGradientBatch, dtype: torch.dtype) -> PolicyGradientBatch:
    """The batch with its floating-point tensors (and its episodes') cast to ``dtype``."""

    def cast(value):
        floating = isinstance(value, Episodes) or (isinstance(value, torch.Tensor) and value.is_floating_point())
        return value.to(dtype=dtype) if floating else value

    return dataclasses.replace(batch, **{f.name: cast(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def relative_errors(oracle, theta: Params, batch: PolicyGradientBatch, u: Params, deltas: tuple[float, ...],
                    dtype: torch.dtype) -> list[float]:
    """``|FD - Hu| / |Hu|`` for each ``delta_0``, the surrogate evaluated in ``dtype``."""
    theta, u = ({k: v.to(dtype) for k, v in tree.items()} for tree in (theta, u))
    batch = in_dtype(batch, dtype)
    leaves = as_leaves(theta)
    exact = flatten(exact_hvp(leaves, gradient_of(oracle, leaves, batch, create_graph=True), u)).double()
    norm = tree_norm(u, task_axis=True)
    errors = []
    for delta in deltas:
        difference = flatten(finite_difference_hvp(oracle, theta, batch, u, delta / norm, task_axis=True)).double()
        errors.append(float((difference - exact).norm() / exact.norm()))
    return errors


def report(deltas: tuple[float, ...], single: list[float], double: list[float], label: str) -> str:
    lines = [label, "", "| delta_0 | relative error, float32 | relative error, float64 |", "| --- | --- | --- |"]
    lines += [f"| {delta:g} | {a:.2e} | {b:.2e} |" for delta, a, b in zip(deltas, single, double)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", type=int, default=10, help="tasks of the meta-batch (default 10)")
    parser.add_argument("--deltas", type=float, nargs="+", default=list(DELTAS), help="delta_0 values")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides on the run's config, e.g. policy.activation=tanh")
    parser.add_argument("--out", type=Path, default=None,
                        help="also append the table, under the command that made it, to this markdown page")
    args = parser.parse_args()
    if args.tasks < 1 or any(not delta > 0 for delta in args.deltas):
        parser.error("--tasks must be at least 1 and every delta_0 > 0")
    torch.set_num_threads(1)
    overrides = ["train.device=cpu", f"meta.batch_tasks={args.tasks}", *args.set]
    config = load_config(args.run_dir / "config.yaml", overrides)
    with MetaTrainer(config, load_params(args.run_dir / PARAMS_FILE)) as trainer:
        tasks = trainer.sample_tasks(0)
        oracle = build_oracle(config, trainer.sampler, tasks, (TRAINING_ROLLOUT_STREAM, KEY_OFFSET))
        theta = stack_params(trainer.params, len(tasks))
        batch = oracle.sample(theta)
    generator = torch.Generator().manual_seed(args.seed)
    u = {k: torch.randn(v.shape, generator=generator) for k, v in theta.items()}
    deltas = tuple(args.deltas)
    errors = [relative_errors(oracle, theta, batch, u, deltas, dtype) for dtype in (torch.float32, torch.float64)]
    label = (f"{len(tasks)} tasks, {config.policy.activation} policy {list(config.policy.hidden_sizes)}, "
             f"'{config.surrogate.kind}' surrogate, {batch.episodes.num_steps} steps")
    text = report(deltas, *errors, label)
    print(text)
    if args.out is not None:
        append_section(args.out, PAGE_HEADER, "scripts/finite_difference_hvp.py", sys.argv[1:], text)


if __name__ == "__main__":
    main()
