"""How much one inner step improves a run's policy, at several step sizes and batch sizes.

A diagnosis of adaptation itself, apart from meta-training: from a finished run's parameters, one
policy-gradient step on each held-out task (the run's estimator, ``evaluation`` settings), measured
on fresh episodes, for every ``--inner-lr`` and ``--episodes``. Tasks with a ``direction`` are also
reported per direction. Example (the random-initialisation control of HalfCheetahDir)::

    python scripts/inner_step_sweep.py runs/reproduce-halfcheetah-dir/random-seed1 \\
        --inner-lr 0.1 0.25 0.5 1 2 4 --episodes 20 100 --protocol steps --task-set finn2017
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.experiment.config import load_config
from metarl.experiment.evaluation import adapt_to_tasks, held_out_tasks
from metarl.experiment.metrics import format_table
from metarl.experiment.run_dir import PARAMS_FILE, load_params


def per_task_returns(batch) -> np.ndarray:
    """Mean undiscounted return of each task's episodes in a batch."""
    episodes = batch.episodes
    totals = (episodes.rewards * episodes.mask).sum(0)  # (B, M)
    return (totals.sum(-1) / episodes.mask[0].sum(-1).clamp_min(1)).numpy()


def describe(returns: np.ndarray, directions: np.ndarray | None) -> list[str]:
    cells = [f"{returns.mean():.1f} +/- {returns.std(ddof=1) / len(returns) ** 0.5:.1f}"]
    if directions is not None:
        cells += [f"{returns[directions > 0].mean():.1f}", f"{returns[directions < 0].mean():.1f}"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--inner-lr", type=float, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, nargs="+", default=[None], help="episodes per task and step")
    parser.add_argument("--protocol", choices=["episodes", "steps", "workers"], default=None)
    parser.add_argument("--task-set", default=None)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown page")
    args = parser.parse_args()
    torch.set_num_threads(1)

    overrides = [f"evaluation.protocol={args.protocol}"] if args.protocol else []
    overrides += [f"evaluation.task_set={args.task_set}"] if args.task_set else []
    params = load_params(args.run_dir / PARAMS_FILE)
    rows = []
    for episodes in args.episodes:
        for lr in args.inner_lr:
            config = load_config(args.run_dir / "config.yaml", [
                *overrides, f"meta.inner_lr={lr}", "meta.inner_steps=1", "meta.inner_step_rule=constant",
                *([f"evaluation.episodes_per_task={episodes}"] if episodes else [])])
            tasks = held_out_tasks(config, args.tasks or config.evaluation.tasks, config.evaluation.seed)
            directions = np.array([t["direction"] for t in tasks]) if "direction" in tasks[0] else None
            _, batches = adapt_to_tasks(config, params, tasks, steps=1, seed=config.evaluation.seed)
            before, after = (per_task_returns(b) for b in batches)
            n = config.evaluation.episodes_per_task or config.meta.episodes_per_task
            rows.append((f"{lr:g}", n, *describe(before, directions), *describe(after, directions),
                         f"{statistics.mean(after - before):.1f}"))
            print(format_table(header(directions), rows[-1:]).splitlines()[-1], flush=True)
    table = format_table(header(directions), rows, markdown=True)
    print(f"\n{table}")
    if args.out is not None:
        command = " ".join(["python", "scripts/inner_step_sweep.py", *sys.argv[1:]])
        args.out.write_text(f"# One inner step from {args.run_dir.name}\n\nWritten by `{command}` "
                            "(`scripts/inner_step_sweep.py`): the mean return on the held-out tasks before and after "
                            "one policy-gradient step at each step size and batch size (+/- standard error over "
                            "tasks; fwd / bwd: tasks running forward / backward), and the mean gain.\n\n"
                            f"{table}\n")


def header(directions: np.ndarray | None) -> list[str]:
    per_direction = directions is not None
    return ["inner lr", "episodes", "before", *(["fwd", "bwd"] if per_direction else []),
            "after 1 step", *(["fwd", "bwd"] if per_direction else []), "gain"]


if __name__ == "__main__":
    main()
