"""How much of Finn et al.'s TRPO metric a few tasks of the meta-batch keep (``outer.metric_tasks``).

Finn et al.'s metric (``outer.metric: adapted``, ``J^T F J`` through the inner step) costs two
Hessian-vector products on the inner batches per conjugate-gradient iteration, for every task of the
meta-batch. ``outer.metric_tasks = k`` builds it on the first k tasks only, at about k / B of the
cost. This script draws meta-batches of a run (its config, at its parameters or ``--params``),
solves ``M_k x = g`` with the TRPO step's 10 conjugate-gradient iterations for each k, and prints
against the direction on every task (``x_B``):

* ``cos(x_k, x_B)``;
* ``efficiency``: ``g^T x_k / sqrt(x_k^T M_B x_k)`` over the same for ``x_B``, the first-order
  improvement of a step of the same KL under the full metric's model (1: as good as the full metric);
* the seconds to build ``M_k`` and run the 10 iterations. Example::

    python scripts/trpo_metric_tasks.py runs/reproduce-halfcheetah-dir/maml-seed1 --tasks 5 10 20 --iterations 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.estimators.meta_gradient import estimate_meta_gradient
from metarl.experiment.build import build_oracle
from metarl.experiment.config import load_config
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.outer.trpo import TrustRegionMetric, conjugate_gradient
from metarl.params import (
    flatten,
    stack_params,
)

KEY_OFFSET = 10**6  # rollouts no training iteration used
HEADER = ["| meta-batch | tasks in the metric | cos(x_k, x_B) | efficiency | seconds |",
          "| --- | --- | --- | --- | --- |"]


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def compare(trainer: MetaTrainer, iteration: int, task_counts: list[int]) -> list[str]:
    """The table rows of one meta-batch: each subset's direction against the full metric's."""
    config = trainer.config
    meta, outer = config.meta, config.outer
    tasks = trainer.sample_tasks(iteration)
    oracle = build_oracle(config, trainer.sampler, tasks, (TRAINING_ROLLOUT_STREAM, KEY_OFFSET + iteration))
    estimate = estimate_meta_gradient(meta.method, oracle, stack_params(trainer.params, len(tasks)),
                                      inner_lr=meta.inner_lr, inner_steps=meta.inner_steps,
                                      step_rule=meta.inner_step_rule, hessian_batch=meta.hessian_batch)
    gradient = flatten({k: v.mean(0) for k, v in estimate.direction.items()}).detach()

    def direction(count: int) -> tuple[Tensor, float, TrustRegionMetric]:
        start = time.perf_counter()
        metric = TrustRegionMetric(oracle, trainer.params, estimate, trainer.outer.inner_lr, meta.inner_steps,
                                   outer.cg_damping, outer.metric, outer.metric_episodes, count)
        x, _ = conjugate_gradient(metric, gradient, outer.cg_iterations)
        return x, time.perf_counter() - start, metric

    full, full_seconds, full_metric = direction(len(tasks))

    def efficiency(x: Tensor) -> float:
        return float(gradient @ x / torch.sqrt(x @ full_metric(x)))

    best = efficiency(full)
    rows = [f"| {iteration} | {len(tasks)} (all) | 1.0000 | 1.000 | {full_seconds:.2f} |"]
    for count in sorted(set(task_counts) - {len(tasks)}, reverse=True):
        x, seconds, _ = direction(count)
        rows.append(f"| {iteration} | {count} | {cosine(x, full):.4f} | {efficiency(x) / best:.3f} | {seconds:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--params", type=Path, default=None, help="parameters to look at (default: the run's)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[5, 10, 20], help="tasks in the subsampled metrics")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1], help="whose meta-batches of tasks to draw")
    parser.add_argument("--out", type=Path, default=None, help="also write the table, under its command, to this page")
    args = parser.parse_args()
    if min(args.tasks) < 1:
        parser.error(f"--tasks {args.tasks}: every count must be at least 1")
    torch.set_num_threads(1)
    config = load_config(args.run_dir / "config.yaml", ["train.device=cpu"])
    if config.outer.kind != "trpo":
        parser.error(f"{args.run_dir} trains with outer.kind = {config.outer.kind!r}: the metric is TRPO's")
    lines = list(HEADER)
    print("\n".join(lines), flush=True)
    with MetaTrainer(config, load_params(args.params or args.run_dir / PARAMS_FILE)) as trainer:
        for iteration in args.iterations:
            for row in compare(trainer, iteration, args.tasks):
                print(row, flush=True)
                lines.append(row)
    if args.out is not None:
        command = " ".join(["python", "scripts/trpo_metric_tasks.py", *sys.argv[1:]])
        title = "# Finn et al.'s TRPO metric on a few tasks of the meta-batch\n\n"
        args.out.write_text(f"{title}Written by `{command}` (`scripts/trpo_metric_tasks.py`, whose docstring "
                            f"defines the columns); metric `{config.outer.metric}`.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
