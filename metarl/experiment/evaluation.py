"""Held-out evaluation: adapt the meta-learned parameters to new tasks and measure returns.

Tasks come from the evaluation seed's own stream, never from the training stream. From the
meta-parameters, K policy-gradient steps are taken on each task (each on fresh episodes), and
the mean undiscounted return of each task's episodes is recorded after 0..K steps. Reported:
the mean over tasks and its standard error.

Three collection protocols (``evaluation.protocol``), each used for the steps and for the returns:

* ``"episodes"`` (default): ``E`` independent episodes per task and step, an unbiased estimate
  of the expected episode return.
* ``"steps"``: the collection of the reference implementation of Finn et al. (rllab's vectorised
  sampler, whose returns the published tables report): ``E`` environments per task run until
  their completed episodes hold ``E * horizon`` steps, and episodes still running are dropped
  (:mod:`metarl.rl.sampling.step_budget`). Episodes that end early are over-represented, so where
  episodes can end before the horizon (navigation's goal) its returns are higher than the unbiased
  ones for the same policy.
* ``"workers"``: the collection of the authors' later test scripts (rllab's parallel sampler,
  ``evaluation.workers`` workers, 4 in their scripts): each worker runs whole episodes until the
  completed ones hold ``E * horizon`` steps, and episodes under way then are kept, so with episodes
  that last the horizon ``E + workers - 1`` are collected.

The held-out tasks are drawn from the evaluation seed's task stream, or, with
``evaluation.task_set``, are the first ones of a fixed list the family names (navigation's
``finn2017``: the 40 test goals of Finn et al.). ``evaluation.later_step_scale`` takes the steps
after the first at a multiple of the inner step (Finn et al.'s test scripts: 0.5),
``evaluation.first_step_scale`` the first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from envs import Task, TaskFamily
from metarl.estimators.meta_gradient import adapt, inner_step_size
from metarl.experiment.allocator import reuse_freed_memory
from metarl.experiment.build import build_collection, build_family, build_family_and_policy, build_oracle
from metarl.experiment.config import Config
from metarl.experiment.metrics import format_table
from metarl.params import Params, stack_params

EVALUATION_TASK_STREAM = 2
EVALUATION_ROLLOUT_STREAM = 3


@dataclass
class EvaluationResult:
    """Mean return over held-out tasks (and its standard error) after 0..K adaptation steps;
    ``task_returns[k][i]``: task i's mean return after k steps (tasks in :func:`held_out_tasks`' order)."""

    steps: list[int]
    mean_return: list[float]
    stderr: list[float]
    num_tasks: int
    seed: int
    episodes_per_task: int
    protocol: str = "episodes"
    task_set: str | None = None
    later_step_scale: float = 1.0
    task_returns: list[list[float]] | None = None
    workers: int | None = None  # the "workers" protocol's
    first_step_scale: float = 1.0

    def describe(self) -> str:
        """How the result was measured, for a table's heading: tasks, collection, step sizes."""
        tasks = (f"{self.num_tasks} tasks drawn with seed {self.seed}" if self.task_set is None
                 else f"the first {self.num_tasks} tasks of set {self.task_set!r}")
        collection = {"episodes": f"{self.episodes_per_task} independent episodes per task and step",
                      "steps": f"{self.episodes_per_task} x horizon steps per task and step ('steps' protocol)",
                      "workers": f"{self.episodes_per_task} x horizon steps per task and step on {self.workers} "
                                 "workers, episodes under way kept ('workers' protocol)"}[self.protocol]
        first = "" if self.first_step_scale == 1.0 else f", the first step at {self.first_step_scale:g}x"
        later = "" if self.later_step_scale == 1.0 else f", steps after the first at {self.later_step_scale:g}x"
        return f"{tasks}, {collection}{first}{later}"

    def table(self) -> str:
        rows = [(k, m, s) for k, m, s in zip(self.steps, self.mean_return, self.stderr)]
        return format_table(["steps", "mean return", "stderr"], rows)

    def save(self, path: str | Path) -> None:
        data = asdict(self)
        if data["workers"] is None:  # only the "workers" protocol has it; other files keep their old fields
            del data["workers"]
        if data["first_step_scale"] == 1.0:
            del data["first_step_scale"]
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        """Read a result written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{str(path)!r} is not a readable evaluation result: {error}") from None


def side_by_side(results: dict[str, EvaluationResult]) -> str:
    """One table of several runs' results: a row per adaptation step, ``mean +/- stderr`` per run."""
    steps = max((r.steps for r in results.values()), key=len)
    rows = []
    for k in steps:
        cells = []
        for result in results.values():
            i = result.steps.index(k) if k in result.steps else None
            cells.append("" if i is None else f"{result.mean_return[i]:.2f} +/- {result.stderr[i]:.2f}")
        rows.append((k, *cells))
    return format_table(["steps", *results], rows)


def held_out_tasks(config: Config, num_tasks: int, seed: int) -> list[Task]:
    """The ``num_tasks`` held-out tasks of ``seed``, drawn from the evaluation seed's own task
    stream (never the training stream), as :func:`evaluate` draws them; with
    ``evaluation.task_set``, the first ``num_tasks`` tasks of that set."""
    family = build_family(config)
    name = config.evaluation.task_set
    if name is not None:
        tasks = family.task_set(name)
        if num_tasks > len(tasks):
            raise ValueError(f"num_tasks = {num_tasks}: task set {name!r} has {len(tasks)} tasks")
        return tasks[:num_tasks]
    stream = np.random.SeedSequence(seed, spawn_key=(EVALUATION_TASK_STREAM,))
    return family.sample_tasks(num_tasks, np.random.default_rng(stream))


def check_task(family: TaskFamily, task: Any) -> Task:
    """``task`` as a task of ``family``: exactly the keys of the family's tasks, values of the same
    shapes, and accepted by the family's environments; ``ValueError`` naming the problem otherwise."""
    template = family.sample_tasks(1, np.random.default_rng(0))[0]
    keys = sorted(template)
    if not isinstance(task, Mapping):
        raise ValueError(f"a task of family {family.name!r} is a mapping with keys {keys}, got {task!r}")
    unknown, missing = sorted(set(task) - set(template)), sorted(set(template) - set(task))
    if unknown or missing:
        problems = [f"{what} keys {names}" for what, names in (("unknown", unknown), ("missing", missing)) if names]
        raise ValueError(f"task {dict(task)!r} for family {family.name!r}: {', '.join(problems)} "
                         f"(its tasks have keys {keys})")
    for key, value in template.items():
        if np.shape(task[key]) != np.shape(value):
            raise ValueError(f"task[{key!r}] = {task[key]!r}: family {family.name!r} needs shape {np.shape(value)}")
    family.make_env(dict(task)).close()  # the family's own checks (finite numbers, allowed values)
    return dict(task)


def draw_task(family: TaskFamily, task: Task | None, task_seed: int | None) -> Any:
    """``task``, or the task of ``family`` drawn with ``task_seed``: exactly one must be given."""
    if (task is None) == (task_seed is None):
        raise ValueError("give a task or a task seed (exactly one)")
    if task is not None:
        return task
    return family.sample_tasks(1, np.random.default_rng(task_seed))[0]


def adapt_to_tasks(config: Config, params: Params, tasks: Sequence[Task], *, steps: int, seed: int,
                   on_batch: Callable[[int, Any], None] | None = None) -> tuple[list[Params], list[Any]]:
    """``steps`` policy-gradient steps from ``params`` on each of ``tasks`` with the config's inner
    step, on rollouts drawn from ``seed`` (``evaluation.episodes_per_task`` episodes per task and
    step, or to that many episodes' steps with the ``"steps"`` and ``"workers"`` protocols), the first
    step scaled by ``evaluation.first_step_scale`` and the later ones by ``evaluation.later_step_scale``;
    returns the task-batched parameters after 0..steps steps and the batch drawn at each. The steps
    run on ``params``' device (a run's files hold CPU tensors, so ``metarl evaluate`` works on any
    machine)."""
    family, policy = build_family_and_policy(config)
    episodes = config.evaluation.episodes_per_task or config.meta.episodes_per_task
    alpha = inner_step_size(config.meta.inner_lr, config.meta.inner_steps, config.meta.inner_step_rule)
    policy.check_params(params)
    dtype = next(policy.parameters()).dtype
    start = stack_params({k: v.to(dtype) for k, v in params.items()}, len(tasks))
    settings = config.evaluation
    with build_collection(config, family, policy, seed, episodes, settings.protocol, settings.workers) as sampler:
        oracle = build_oracle(config, sampler, tasks, (EVALUATION_ROLLOUT_STREAM,))
        return adapt(oracle, start, inner_lr=alpha, steps=steps, later_step_scale=settings.later_step_scale,
                     first_step_scale=settings.first_step_scale, on_batch=on_batch)


LATEST_EVALUATION = "evaluation.json"


def evaluation_path(run_dir: str | Path, *, num_tasks: int, steps: int, episodes_per_task: int, seed: int,
                    protocol: str = "episodes", task_set: str | None = None, later_step_scale: float = 1.0,
                    workers: int | None = None, first_step_scale: float = 1.0) -> Path:
    """Where :func:`save_evaluation` keeps the result of these settings: ``evaluation-<tasks>tasks-
    <steps>steps-<episodes>episodes-seed<seed>[-stepsprotocol|-<n>workersprotocol][-<set>tasks][-firststep<scale>]
    [-laterstep<scale>].json``."""
    if protocol == "workers" and workers is None:
        raise ValueError("the 'workers' protocol's file name needs its number of workers")
    collection = {"episodes": "", "steps": "-stepsprotocol", "workers": f"-{workers}workersprotocol"}[protocol]
    suffix = collection + ("" if task_set is None else f"-{task_set}tasks")
    suffix += "" if first_step_scale == 1 else f"-firststep{first_step_scale:g}"
    suffix += "" if later_step_scale == 1 else f"-laterstep{later_step_scale:g}"
    return Path(run_dir) / (f"evaluation-{num_tasks}tasks-{steps}steps-{episodes_per_task}episodes-"
                            f"seed{seed}{suffix}.json")


def save_evaluation(result: EvaluationResult, run_dir: str | Path) -> Path:
    """Write ``result`` into ``run_dir`` twice: as the run's latest evaluation (``evaluation.json``,
    what ``metarl plot`` draws) and under a name of its settings (:func:`evaluation_path`), so that
    an evaluation with other settings never replaces it. Returns the second path."""
    named = evaluation_path(run_dir, num_tasks=result.num_tasks, steps=result.steps[-1],
                            episodes_per_task=result.episodes_per_task, seed=result.seed, protocol=result.protocol,
                            task_set=result.task_set, later_step_scale=result.later_step_scale, workers=result.workers,
                            first_step_scale=result.first_step_scale)
    result.save(named)
    result.save(Path(run_dir) / LATEST_EVALUATION)
    return named


def evaluate(
    config: Config,
    params: Params,
    *,
    num_tasks: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Adapt ``params`` to held-out tasks with the config's inner step and report returns.

    ``num_tasks``, ``steps`` and ``seed`` default to the config's ``evaluation`` section. With
    ``progress``, a progress bar (on a terminal only) shows each step's return and time left.
    """
    num_tasks = config.evaluation.tasks if num_tasks is None else num_tasks
    steps = config.evaluation.steps if steps is None else steps
    seed = config.evaluation.seed if seed is None else seed
    if num_tasks < 2:
        raise ValueError(f"num_tasks = {num_tasks}: at least 2 tasks are needed for a standard error")
    if steps < 0:
        raise ValueError(f"steps = {steps}: the number of adaptation steps must be >= 0")
    if not 0 <= seed < 2**63 or seed == config.seed:
        raise ValueError(f"seed = {seed}: held-out tasks need a seed >= 0 that differs from the training seed "
                         f"{config.seed}")
    if not all(bool(torch.isfinite(v).all()) for v in params.values()):
        raise ValueError("the parameters hold NaN or Inf: there is nothing to evaluate")
    if config.train.reuse_freed_memory:
        reuse_freed_memory()
    episodes = config.evaluation.episodes_per_task or config.meta.episodes_per_task
    tasks = held_out_tasks(config, num_tasks, seed)
    bar = tqdm(total=steps + 1, desc="evaluate", unit="step", disable=None if progress else True, dynamic_ncols=True)

    def report(k: int, batch: Any) -> None:
        bar.update(1)
        bar.set_postfix(step=k, mean_return=f"{batch.episodes.mean_return():.1f}")

    try:
        _, batches = adapt_to_tasks(config, params, tasks, steps=steps, seed=seed, on_batch=report)
    finally:
        bar.close()
    per_task = [batch.episodes.task_mean_returns().to(torch.float64) for batch in batches]
    means = [float(returns.mean()) for returns in per_task]
    errors = [float(returns.std(unbiased=True)) / math.sqrt(num_tasks) for returns in per_task]
    settings = config.evaluation
    return EvaluationResult(steps=list(range(steps + 1)), mean_return=means, stderr=errors, num_tasks=num_tasks,
                            seed=seed, episodes_per_task=episodes, protocol=settings.protocol,
                            task_set=settings.task_set, later_step_scale=settings.later_step_scale,
                            task_returns=[returns.tolist() for returns in per_task],
                            workers=settings.workers if settings.protocol == "workers" else None,
                            first_step_scale=settings.first_step_scale)
