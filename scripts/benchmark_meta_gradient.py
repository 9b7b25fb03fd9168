"""Time one meta-gradient (MAML, FO-MAML, HF-MAML; 1 and 3 inner steps) as the policy grows.

The estimator's own cost, without sampling: every batch the estimator asks for is a set of real
navigation rollouts drawn once beforehand and replayed (the surrogate is evaluated on it at the
parameters the estimator passes, exactly as with fresh rollouts). Policies are 2-hidden-layer
MLPs of width h, from about 1e3 to 1e6 parameters. Prints seconds per meta-gradient, the cost
relative to FO-MAML, and the log-log slope of time against size (1.0 = linear). ``hfmaml`` is the
central difference (the default), ``hfmaml-fwd`` the forward difference (``meta.hf_difference``).

    python scripts/benchmark_meta_gradient.py [--tasks 10] [--episodes 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import numpy as np
import torch

from envs import make_family
from metarl.estimators.meta_gradient import estimate_meta_gradient
from metarl.experiment.metrics import format_table
from metarl.params import Params, stack_params
from metarl.rl.oracles import PolicyGradientOracle
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampling import VectorSampler

WIDTHS = (29, 97, 313, 997)  # about 1e3, 1e4, 1e5 and 1e6 parameters
# name -> (method, HF-MAML finite difference)
VARIANTS = {"fomaml": ("fomaml", "central"), "hfmaml": ("hfmaml", "central"), "hfmaml-fwd": ("hfmaml", "forward"),
            "maml": ("maml", "central")}


class ReplayOracle:
    """Hands out pre-drawn batches in turn; the objective is the wrapped oracle's surrogate."""

    task_axis = True

    def __init__(self, oracle: PolicyGradientOracle, batches: list[Any]) -> None:
        self.oracle, self.batches, self.draws = oracle, batches, 0

    def sample(self, params: Params) -> Any:
        batch = self.batches[self.draws % len(self.batches)]
        self.draws += 1
        return batch

    def objective(self, params: Params, batch: Any) -> torch.Tensor:
        return self.oracle.objective(params, batch)


def replay_oracle(width: int, tasks: int, episodes: int, draws: int) -> tuple[ReplayOracle, Params, float]:
    """A replay oracle with ``draws`` batches for a (width, width) policy, the policy's stacked
    parameters, and the seconds one sampling draw took (for context)."""
    family = make_family("navigation2d")
    policy = GaussianMLPPolicy(2, 2, (width, width), init_std=0.1)
    sampler = VectorSampler(family, policy, episodes, seed=0)
    task_list = family.sample_tasks(tasks, np.random.default_rng(0))
    oracle = PolicyGradientOracle(sampler, task_list, surrogate="dice")
    params = stack_params(policy.init_params(), tasks)
    start = time.perf_counter()
    batches = [oracle.sample(params)]
    sample_seconds = time.perf_counter() - start
    batches += [oracle.sample(params) for _ in range(draws - 1)]
    return ReplayOracle(oracle, batches), params, sample_seconds


def time_meta_gradient(variant: str, oracle: ReplayOracle, params: Params, inner_steps: int, repeats: int) -> float:
    """Median seconds of one meta-gradient (after one warm-up call)."""
    method, difference = VARIANTS[variant]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        estimate_meta_gradient(method, oracle, params, inner_lr=0.1, inner_steps=inner_steps, difference=difference)
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def slope(sizes: list[int], seconds: list[float]) -> float:
    """log-log slope of time against size between the two largest sizes."""
    return math.log(seconds[-1] / seconds[-2]) / math.log(sizes[-1] / sizes[-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    args = parser.parse_args()
    torch.manual_seed(0)

    seconds: dict[tuple[str, int], list[float]] = {(v, n): [] for v in VARIANTS for n in args.inner_steps}
    sizes, rows = [], []
    for width in args.widths:
        oracle, params, sample_seconds = replay_oracle(width, args.tasks, args.episodes, draws=4)
        size = sum(v[0].numel() for v in params.values())
        sizes.append(size)
        for n in args.inner_steps:
            timed = {v: time_meta_gradient(v, oracle, params, n, args.repeats) for v in VARIANTS}
            for v in VARIANTS:
                seconds[(v, n)].append(timed[v])
            rows.append((f"{size:,}", n, *(f"{timed[v]:.3f}" for v in VARIANTS),
                         *(f"{timed[v] / timed['fomaml']:.2f}" for v in ("hfmaml", "hfmaml-fwd", "maml")),
                         f"{sample_seconds:.3f}"))
        print(f"  width {width}: {size:,} parameters done", flush=True)

    steps = args.tasks * args.episodes * 100
    print(f"\nnavigation2d, {args.tasks} tasks x {args.episodes} episodes x 100 steps ({steps:,} steps) per batch, "
          f"float32, torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")
    print(format_table(["params", "inner steps", *(f"{v} s" for v in VARIANTS), "hf / fo", "hf-fwd / fo",
                        "maml / fo", "one draw s"], rows))
    if len(sizes) >= 2:
        slopes = [(v, n, f"{slope(sizes, seconds[(v, n)]):.2f}") for v in VARIANTS for n in args.inner_steps]
        print(f"\nlog-log slope of time against parameters, {sizes[-2]:,} -> {sizes[-1]:,} (1.00 = linear)")
        print(format_table(["method", "inner steps", "slope"], slopes))


if __name__ == "__main__":
    main()
