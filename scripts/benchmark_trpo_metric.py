"""Time Finn et al.'s TRPO metric products with the meta-batch's graphs built per chunk of tasks.

With ``outer.metric_task_chunk``, ``TrustRegionMetric`` builds the graphs of ``J_i^T F_i J_i`` (the
adapted metric) for that many tasks at a time and sums the chunks' products: the same product, in
several small graphs. This script draws one meta-batch of a config (at the policy's initial
parameters) and builds the metric with every task in one graph (the reference) and per chunk size.
Each runs ``--products`` products, ``--repeats`` times, interleaved. It prints the median seconds
to build and per product, a product's speed-up over the reference measured in the same run, and the
largest relative difference from the reference's products (float32 rounding only: the chunked
products are exact).

Example::

    python scripts/benchmark_trpo_metric.py configs/halfcheetah-dir-maml.yaml --chunks 20 8 4 2
"""

from __future__ import annotations

import argparse
import statistics
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
from metarl.experiment.metrics import format_table
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.outer.trpo import TrustRegionMetric
from metarl.params import (
    flatten,
    stack_params,
)


def timed_products(make_metric, vectors: list[Tensor]) -> tuple[float, float, list[Tensor]]:
    """(seconds to build, seconds per product, the products) of one metric."""
    start = time.perf_counter()
    metric = make_metric()
    built = time.perf_counter()
    products = [metric(v) for v in vectors]
    return built - start, (time.perf_counter() - built) / len(vectors), products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--chunks", type=int, nargs="+", default=[20, 8, 4, 2], help="tasks per graph to time")
    parser.add_argument("--products", type=int, default=10, help="products per metric (a TRPO step's CG runs 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per size (the table shows medians)")
    args = parser.parse_args()
    if min(args.chunks) < 1 or args.products < 1 or args.repeats < 1:
        parser.error("every --chunks size, --products and --repeats must be at least 1")
    torch.set_num_threads(1)
    config = load_config(args.config, ["train.device=cpu", *args.set])
    meta, outer = config.meta, config.outer
    with MetaTrainer(config) as trainer:
        tasks = trainer.sample_tasks(0)
        oracle = build_oracle(config, trainer.sampler, tasks, (TRAINING_ROLLOUT_STREAM, 0))
        estimate = estimate_meta_gradient(meta.method, oracle, stack_params(trainer.params, len(tasks)),
                                          inner_lr=meta.inner_lr, inner_steps=meta.inner_steps,
                                          step_rule=meta.inner_step_rule, hessian_batch=meta.hessian_batch)
        size = flatten(trainer.params).numel()
        generator = torch.Generator().manual_seed(0)
        vectors = [torch.randn(size, generator=generator) for _ in range(args.products)]

        def metric(chunk: int):
            return lambda: TrustRegionMetric(oracle, trainer.params, estimate, trainer.outer.inner_lr,
                                             meta.inner_steps, outer.cg_damping, outer.metric,
                                             outer.metric_episodes, outer.metric_tasks, task_chunk=chunk)

        chunks = [len(tasks), *sorted(set(args.chunks) - {len(tasks)}, reverse=True)]
        timings: dict[int, list[tuple[float, float]]] = {chunk: [] for chunk in chunks}
        products: dict[int, list[Tensor]] = {}
        for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits every size
            for chunk in chunks:
                build, seconds, products[chunk] = timed_products(metric(chunk), vectors)
                timings[chunk].append((build, seconds))
    reference = products[len(tasks)]
    per_product = {chunk: statistics.median(s for _, s in timings[chunk]) for chunk in chunks}
    rows = []
    for chunk in chunks:
        difference = max(float((p - r).norm() / r.norm()) for p, r in zip(products[chunk], reference))
        rows.append([f"{chunk} (one graph)" if chunk == len(tasks) else chunk,
                     f"{statistics.median(b for b, _ in timings[chunk]):.2f}", f"{per_product[chunk]:.3f}",
                     f"{per_product[len(tasks)] / per_product[chunk]:.2f}", f"{difference:.1e}"])
    print(f"{config.name}: {len(tasks)} tasks x {meta.episodes_per_task} episodes, metric {outer.metric}, "
          f"{args.products} products, median of {args.repeats} timings, torch threads 1")
    print(format_table(["tasks per graph", "build s", "s / product", "speed-up", "max rel. difference"], rows,
                       markdown=True))


if __name__ == "__main__":
    main()
