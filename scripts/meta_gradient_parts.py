"""How much of a run's MAML meta-gradient is its second-order part, and how much of each part is noise.

From a finished run's parameters, the MAML and the first-order MAML directions (mean over one
meta-batch of the run's family, both on the same rollouts: the same sampler keys) and their
difference, the second-order part ``alpha * H^T u``, beside the first-order part. With
``--batches R`` (R >= 2) each is estimated on R independent batches of rollouts of the same tasks:
the mean cosine between two batches' estimates of a part is about ``|g|^2 / (|g|^2 + noise)``, near 1
for a part the batch size measures and near 0 for one that is mostly noise. The last table splits
the second-order part's squared norm over the policy's parameters. Example::

    python scripts/meta_gradient_parts.py runs/reproduce-halfcheetah-dir/maml-seed1 --batches 4
    python scripts/meta_gradient_parts.py runs/reproduce-halfcheetah-dir/maml-seed1 --batches 4 \
        --params runs/reproduce-halfcheetah-dir/random-seed1/params.pt
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.estimators.meta_gradient import estimate_meta_gradient
from metarl.experiment.build import build_oracle
from metarl.experiment.config import MetaConfig, load_config
from metarl.experiment.metrics import append_section
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.experiment.trainer import TRAINING_ROLLOUT_STREAM, MetaTrainer
from metarl.params import (
    Params,
    flatten,
    stack_params,
)

KEY_OFFSET = 10**6  # rollouts no training iteration used
PAGE_HEADER = """# Parts of the MAML meta-gradient

Each section below was written by `scripts/meta_gradient_parts.py --out` (its command is the
heading): the first-order part of the MAML meta-gradient (the FO-MAML direction) and its
second-order part (MAML minus FO-MAML, on the same rollouts), mean over one meta-batch of tasks.
On several independent batches of rollouts of the same tasks, the mean cosine between two
batches' estimates of a part tells how much of it the batch size measures (near 1) and how much is
noise (near 0).
"""


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def parts(trainer: MetaTrainer, tasks: list, key: tuple[int, ...], hfmaml: bool = False) -> dict[str, Params]:
    """The first-order part, the MAML direction and their difference on one batch of rollouts; with
    ``hfmaml`` also HF-MAML's second-order part (its direction minus the first-order one), with the
    run's finite difference, on the same rollouts."""
    config, meta, directions = trainer.config, trainer.config.meta, {}
    for method in ("fomaml", "maml", "hfmaml") if hfmaml else ("fomaml", "maml"):
        oracle = build_oracle(config, trainer.sampler, tasks, key)
        finite_difference = {"delta": meta.hf_delta, "delta_rule": meta.hf_delta_rule, "rho": meta.rho,
                             "difference": meta.hf_difference} if method == "hfmaml" else {}
        estimate = estimate_meta_gradient(method, oracle, stack_params(trainer.params, len(tasks)),
                                          inner_lr=meta.inner_lr, inner_steps=meta.inner_steps,
                                          step_rule=meta.inner_step_rule, hessian_batch=meta.hessian_batch,
                                          **finite_difference)
        directions[method] = {k: v.mean(0) for k, v in estimate.direction.items()}
    first = directions["fomaml"]
    result = {"first-order": first, "second-order": {k: directions["maml"][k] - first[k] for k in first},
              "MAML": directions["maml"]}
    if hfmaml:
        result["HF-MAML second-order"] = {k: directions["hfmaml"][k] - first[k] for k in first}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", type=int, default=None, help="meta-batch size (default: the run's)")
    parser.add_argument("--iteration", type=int, default=7, help="whose meta-batch of tasks to draw")
    parser.add_argument("--batches", type=int, default=1, help="independent batches of rollouts of the same tasks")
    parser.add_argument("--out", type=Path, default=None,
                        help="also append the tables, under the command that made them, to this markdown page")
    parser.add_argument("--params", type=Path, default=None,
                        help="parameters to estimate at (default: the run's params.pt), e.g. another run's initial "
                             "ones")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides on the run's config, e.g. meta.hf_delta=0.01")
    parser.add_argument("--hfmaml", action="store_true",
                        help="also HF-MAML's second-order part on the same rollouts, against MAML's")
    args = parser.parse_args()
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    torch.set_num_threads(1)
    overrides = ["train.device=cpu", *([f"meta.batch_tasks={args.tasks}"] if args.tasks else []), *args.set]
    config = load_config(args.run_dir / "config.yaml", overrides)
    if config.meta.hessian_batch != "shared":
        parser.error("the parts are differences on the same rollouts, which needs meta.hessian_batch=shared "
                     "(add --set meta.hessian_batch=shared)")
    if args.hfmaml and config.meta.hf_delta_rule == "theory" and config.meta.rho is None:
        parser.error("--hfmaml with meta.hf_delta_rule=theory needs meta.rho (add --set meta.rho=...)")
    with MetaTrainer(config, load_params(args.params or args.run_dir / PARAMS_FILE)) as trainer:
        tasks = trainer.sample_tasks(args.iteration)
        key = (TRAINING_ROLLOUT_STREAM, KEY_OFFSET + args.iteration)
        batches = [parts(trainer, tasks, key if batch == 0 else (*key, 1000 + batch), args.hfmaml)
                   for batch in range(args.batches)]
    text = report(batches, len(tasks), collection_label(config.meta))
    print(text)
    if args.out is not None:
        append_section(args.out, PAGE_HEADER, "scripts/meta_gradient_parts.py", sys.argv[1:], text)


def collection_label(meta: MetaConfig) -> str:
    """How a batch was collected, as the table's heading says it: episodes, or rllab's step budget."""
    if meta.protocol == "episodes":
        return f"{meta.episodes_per_task} episodes per task"
    workers = f" on {meta.workers} workers" if meta.protocol == "workers" else ""
    return f"a budget of {meta.episodes_per_task} horizons of steps per task ('{meta.protocol}' collection{workers})"


def report(batches: list[dict[str, Params]], num_tasks: int, collection: str) -> str:
    """The first line (batch 0) and, for several batches, the two tables."""
    first, second, maml = (flatten(batches[0][name]) for name in ("first-order", "second-order", "MAML"))
    lines = [f"{num_tasks} tasks: first-order part {first.norm():.4g}, second-order part {second.norm():.4g} "
             f"({second.norm() / first.norm():.2f}x), cosine(MAML, first-order) {cosine(maml, first):.3f}"]
    if "HF-MAML second-order" in batches[0]:
        lines.append(hfmaml_line(batches))
    if len(batches) < 2:
        return "\n".join(lines)
    lines += ["", f"{len(batches)} independent batches of {collection}", "",
              "| part | mean norm | cosine between batches (mean over pairs) |", "| --- | --- | --- |"]
    for name in batches[0]:
        vectors = [flatten(batch[name]) for batch in batches]
        pairs = [cosine(a, b) for a, b in itertools.combinations(vectors, 2)]
        lines.append(f"| {name} | {sum(float(v.norm()) for v in vectors) / len(vectors):.4g} | "
                     f"{sum(pairs) / len(pairs):.3f} |")
    lines += ["", "| parameter | share of the second-order part's squared norm |", "| --- | --- |"]
    total = sum(float(flatten(batch["second-order"]).square().sum()) for batch in batches)
    for key in batches[0]["second-order"]:
        share = sum(float(batch["second-order"][key].square().sum()) for batch in batches) / total
        lines.append(f"| {key} | {share:.3f} |")
    return "\n".join(lines)


def hfmaml_line(batches: list[dict[str, Params]]) -> str:
    """How HF-MAML's finite-difference second-order part compares with MAML's exact one, on the same
    rollouts: mean over batches of their cosine and of |HF - MAML| / |MAML|."""
    pairs = [(flatten(batch["HF-MAML second-order"]), flatten(batch["second-order"])) for batch in batches]
    agreement = sum(cosine(hf, exact) for hf, exact in pairs) / len(pairs)
    error = sum(float((hf - exact).norm() / exact.norm()) for hf, exact in pairs) / len(pairs)
    return (f"HF-MAML's second-order part against MAML's, same rollouts ({len(pairs)} batches): "
            f"cosine {agreement:.4f}, relative difference {error:.2e}")


if __name__ == "__main__":
    main()
