"""How much the linear value baseline's ridge changes its fit, on a run's own rollouts.

Draws one batch of rollouts per run (its config's tasks and episodes, at its parameters), fits the
linear feature baseline per task with the two ridges of ``surrogate.baseline_ridge`` (``relative``:
1e-5 times the mean diagonal of the normal matrix; ``absolute``: 1e-5, as rllab's
``LinearFeatureBaseline`` in Finn et al.'s code) and prints, per run, the explained variance of each
fit on the returns it was fitted to (as the advantages use it) and the root mean square difference
of the two fits in units of the returns' standard deviation (mean over tasks). Example::

    python scripts/baseline_ridge.py runs/reproduce-halfcheetah-dir/maml-seed1 runs/reproduce-halfcheetah-vel/maml-seed1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.experiment.build import build_oracle
from metarl.experiment.config import load_config
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.params import stack_params
from metarl.rl.returns import RIDGES, LinearFeatureBaseline, discounted_returns

KEY_OFFSET = 10**6  # rollouts no training iteration used


def explained_variance(returns: Tensor, fit: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(R - b) / Var(R)`` per task over the real steps of (T, B, M) tensors."""
    return 1 - _variance(returns - fit, mask) / _variance(returns, mask)


def _variance(x: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum((0, 2))
    mean = (x * mask).sum((0, 2)) / count
    return ((x - mean.view(1, -1, 1)).square() * mask).sum((0, 2)) / count


def compare(run_dir: Path, tasks: int | None, iteration: int) -> str:
    """The table row of one run: both fits' explained variance and their difference."""
    overrides = ["train.device=cpu"] + ([f"meta.batch_tasks={tasks}"] if tasks else [])
    config = load_config(run_dir / "config.yaml", overrides)
    with MetaTrainer(config, load_params(run_dir / PARAMS_FILE)) as trainer:
        sampled = trainer.sample_tasks(iteration)
        oracle = build_oracle(config, trainer.sampler, sampled, (TRAINING_ROLLOUT_STREAM, KEY_OFFSET + iteration))
        episodes = oracle.sample(stack_params(trainer.params, len(sampled))).episodes
    mask = episodes.mask.double()
    returns = discounted_returns(episodes.rewards.double(), mask, config.surrogate.gamma)
    fits = {ridge: LinearFeatureBaseline(ridge=ridge).fit_predict(episodes.observations.double(), returns, mask)
            for ridge in RIDGES}
    scores = [f"{float(explained_variance(returns, fits[ridge], mask).mean()):.4f}" for ridge in RIDGES]
    difference = (fits["relative"] - fits["absolute"]).square().mul(mask).sum((0, 2)) / mask.sum((0, 2))
    rms = float((difference.sqrt() / _variance(returns, mask).sqrt()).mean())
    return f"| `{run_dir}` | {len(sampled)} | {' | '.join(scores)} | {rms:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per batch (default: the run's meta-batch)")
    parser.add_argument("--iteration", type=int, default=7, help="whose meta-batch of tasks to draw")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| run | tasks | explained variance, {' | explained variance, '.join(RIDGES)} "
          "| RMS difference / std of the returns |")
    print("| --- | --- | --- | --- | --- |")
    for run_dir in args.run_dirs:
        print(compare(run_dir, args.tasks, args.iteration))


if __name__ == "__main__":
    main()
