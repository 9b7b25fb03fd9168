"""Time one meta-iteration of each estimator on the usual 2D navigation setting.

The shipped configs ``configs/navigation-{maml,fomaml,hfmaml}.yaml``: 20 tasks x 20 episodes x
100 steps per phase, 100x100 policy, TRPO outer step (Finn et al.'s hyper-parameters).
Prints a table of seconds per meta-iteration (median and best over the timed iterations) and the
median of each phase: sampling, adaptation, meta-gradient, outer update (for TRPO: conjugate
gradient and line search).

    python scripts/benchmark_iteration.py [--iterations 10] [--inner-steps 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from metarl.experiment.config import load_config
from metarl.experiment.metrics import format_table
from metarl.experiment.trainer import MetaTrainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


PHASES = ("sampling", "adaptation", "meta_gradient", "update")


def time_method(method: str, iterations: int, warmup: int, inner_steps: int,
                overrides: list[str]) -> tuple[list[float], dict[str, float], int]:
    """Seconds per meta-iteration with the shipped navigation config of ``method``, the median
    seconds of each phase, and the environment steps per iteration."""
    config = load_config(CONFIGS / f"navigation-{method}.yaml", [f"meta.inner_steps={inner_steps}", *overrides])
    assert (config.meta.batch_tasks, config.meta.episodes_per_task) == (20, 20)
    trainer = MetaTrainer(config)
    for _ in range(warmup):
        trainer.step()
    times, records, steps_before = [], [], trainer.env_steps
    for _ in range(iterations):
        start = time.perf_counter()
        records.append(trainer.step())
        times.append(time.perf_counter() - start)
    phases = {p: statistics.median(r[f"time_{p}_s"] for r in records) for p in PHASES}
    return times, phases, (trainer.env_steps - steps_before) // iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["maml", "fomaml", "hfmaml"])
    parser.add_argument("overrides", nargs="*", help="config overrides, for example outer.metric=adapted")
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        times, phases, steps = time_method(method, args.iterations, args.warmup, args.inner_steps, args.overrides)
        rows.append((method, args.inner_steps, f"{statistics.median(times):.3f}", f"{min(times):.3f}",
                     *(f"{phases[p]:.3f}" for p in PHASES), f"{steps / statistics.median(times):,.0f}"))
    print(f"navigation2d, 20 tasks x 20 episodes x 100 steps per phase, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads" + (f", overrides: {' '.join(args.overrides)}" if args.overrides else ""))
    print(format_table(["method", "inner steps", "median s/iter", "best s/iter", *(f"{p} s" for p in PHASES),
                        "env steps/s"], rows))


if __name__ == "__main__":
    main()
