"""How much of a run's MAML meta-gradient is its second-order part.

From a finished run's parameters, the MAML and the first-order MAML directions (mean over one
meta-batch of the run's family, both on the same rollouts: the same sampler keys) and the norm of
their difference, the second-order part ``alpha * H^T u``, beside the first-order part. Example::

    python scripts/meta_gradient_parts.py runs/reproduce-halfcheetah-dir/maml-seed1 --tasks 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.build import build_oracle  # noqa: E402
from metarl.config import load_config  # noqa: E402
from metarl.meta import estimate_meta_gradient  # noqa: E402
from metarl.oracles import stack_params  # noqa: E402
from metarl.trainer import PARAMS_FILE, TRAINING_ROLLOUT_STREAM, MetaTrainer, load_params  # noqa: E402
from metarl.trpo import flatten  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", type=int, default=None, help="meta-batch size (default: the run's)")
    parser.add_argument("--iteration", type=int, default=7, help="whose meta-batch of tasks to draw")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.run_dir / "config.yaml", [f"meta.batch_tasks={args.tasks}"] if args.tasks else [])
    with MetaTrainer(config, load_params(args.run_dir / PARAMS_FILE)) as trainer:
        tasks = trainer.sample_tasks(args.iteration)
        directions = {}
        for method in ("fomaml", "maml"):
            oracle = build_oracle(config, trainer.sampler, tasks, (TRAINING_ROLLOUT_STREAM, 10**6 + args.iteration))
            estimate = estimate_meta_gradient(method, oracle, stack_params(trainer.params, len(tasks)),
                                              inner_lr=config.meta.inner_lr, inner_steps=config.meta.inner_steps)
            directions[method] = flatten({k: v.mean(0) for k, v in estimate.direction.items()})
    first, maml = directions["fomaml"], directions["maml"]
    second = maml - first
    cosine = float(torch.dot(maml, first) / (maml.norm() * first.norm()))
    print(f"{len(tasks)} tasks: first-order part {first.norm():.4g}, second-order part {second.norm():.4g} "
          f"({second.norm() / first.norm():.2f}x), cosine(MAML, first-order) {cosine:.3f}")


if __name__ == "__main__":
    main()
