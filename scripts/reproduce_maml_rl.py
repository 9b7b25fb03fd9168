"""Reproduce the MAML-RL results of Finn et al. (2017): 2D navigation and locomotion.

Trains MAML, FO-MAML and HF-MAML (TRPO outer step, the paper's hyper-parameters:
``configs/<family>-{maml,fomaml,hfmaml}.yaml``) and the paper's three baselines
(``configs/<family>-{pretrained,random,oracle}.yaml``) for several seeds, each
with the ``metarl train`` command, and evaluates every run on the same 40 held-out tasks after
0..3 adaptation steps (the configs' ``evaluation`` section, fixed seed) twice: as the published
values were measured (the authors' test tasks, ``finn2017``, where the family has them, their
step budget, the ``steps`` protocol, and their test's step sizes: the first is the config's inner
step, the later ones half of it) and unbiased (tasks drawn from the evaluation seed,
independent episodes, every step the training inner step). ``--half-first-step`` adds a third: as
published, with every step at half the inner step (the authors' test code from February to April
2017). Writes a markdown page with a table per evaluation beside the published one, the per-seed
numbers, the wall time, and a plot.

    python scripts/reproduce_maml_rl.py --family navigation [--seeds 1 2 3] [--jobs 2]
        [--methods maml fomaml ...] [--set outer.metric=adapted ...] [--page navigation]
        [--runs runs/reproduce-navigation] [--out docs/results] [--half-first-step]

``--set`` applies config overrides to every run (``--page`` then names the variant's page and
``--runs`` its run directory).

Runs and evaluations already finished under ``--runs`` are reused, and a run stopped after a
checkpoint resumes from it, so an interrupted reproduction continues where it stopped. ``--jobs``
runs trainings in parallel, each with ``torch`` limited to one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from metarl.experiment.config import load_config
from metarl.experiment.evaluation import EvaluationResult, evaluation_path
from metarl.experiment.metrics import format_table
from metarl.experiment.plotting import plot_adaptation

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("maml", "fomaml", "hfmaml", "pretrained", "random", "oracle")
LABELS = {"maml": "MAML", "fomaml": "FO-MAML", "hfmaml": "HF-MAML", "pretrained": "pretrained",
          "random": "random", "oracle": "oracle"}
# Finn et al. (2017), mean return after 0 / 1 / 2 / 3 gradient steps (DESIGN.md).
PUBLISHED = {
    "navigation": {"maml": [-40.4, -11.7, -3.3, -3.2], "pretrained": [-40.8, -19.7, -11.7, -8.5],
                   "random": [-82.7, -58.0, -53.8, -46.8], "oracle": [-2.3]},
    "halfcheetah-vel": {"maml": [-129.5, -78.6, -66.6, -60.8], "pretrained": [-158.0, -135.4, -128.5, -133.6],
                        "random": [-254.8, -254.3, -246.8, -230.8], "oracle": [-54.5]},
    "halfcheetah-dir": {"maml": [-50.7, 293.2, 313.5, 315.7], "pretrained": [-43.0, -24.8, -12.9, 19.6],
                        "random": [-35.7, 21.8, 62.3, 86.2], "oracle": [442.7]},
    "ant-vel": {"maml": [30.6, 96.7, 100.1, 101.4], "pretrained": [-1.8, 6.1, 8.5, 9.5], "oracle": [107.9]},
    # the AntDir figure plots the random control too (icml/make_antdirec_plots.py; the AntVel one does not)
    "ant-dir": {"maml": [8.7, 499.2, 500.7, 499.1], "pretrained": [3.2, 1.3, 6.5, 6.9],
                "random": [3.1, 9.2, 16.0, 26.1], "oracle": [524.8]},
    "ant-goal": {},
}
# The budget behind each published MAML row, iterations x tasks x episodes per task: the paper's for
# navigation; for locomotion the checkpoint the authors' July 2017 test scripts load (maml_examples/
# test_maml_*.py; those at the results commit load others, e.g. AntDir's 350 x 20 x 40 "still training").
PUBLISHED_BUDGETS = {"navigation": (500, 20, 20), "halfcheetah-vel": (475, 40, 10), "halfcheetah-dir": (100, 40, 20),
                     "ant-vel": (375, 40, 20), "ant-dir": (575, 40, 40)}
# The two evaluations of every run: as the published values were measured, and unbiased.
EVALUATIONS = ("published", "unbiased")
# With --half-first-step, a third: as published, but every step at half the inner step, as the authors'
# test code took them from February to April 2017 (first_order_optimizer.py, 87325bb to 285393d).
HALF_FIRST_STEP = "published, every step at half"
# The authors' test tasks, where a family has them (the task set's family docstrings; none for the Ant goal).
TASK_SETS = {family: "finn2017"
             for family in ("navigation", "halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir")}
# Their tests take every step after the first at half the inner step (examples/test_vpg_*.py at their
# results commit 4d41869; the AntDir files hold that script's tasks, so the hundredth of its July
# script, maml_examples/test_maml_ant_direc.py, came after them).
PUBLISHED_LATER_STEP_SCALE = 0.5


def evaluation_settings(family: str, evaluation: str) -> dict[str, str | float | None]:
    """``protocol``, ``task_set``, ``later_step_scale`` and ``first_step_scale`` of one of the
    :data:`EVALUATIONS` or :data:`HALF_FIRST_STEP`."""
    if evaluation in ("published", HALF_FIRST_STEP):
        return {"protocol": "steps", "task_set": TASK_SETS.get(family), "later_step_scale": PUBLISHED_LATER_STEP_SCALE,
                "first_step_scale": 0.5 if evaluation == HALF_FIRST_STEP else 1.0}
    return {"protocol": "episodes", "task_set": None, "later_step_scale": 1.0, "first_step_scale": 1.0}


def describe(family: str, evaluation: str, n: int, tasks: int, seed: int) -> str:
    settings = evaluation_settings(family, evaluation)
    if evaluation == "unbiased":
        return (f"{tasks} tasks drawn from the evaluation seed {seed}, {n} independent episodes per task and step "
                "(`episodes` protocol): an unbiased estimate of the expected return.")
    where = (f"on the authors' {tasks} test tasks (task set `{settings['task_set']}`)" if settings["task_set"]
             else f"on {tasks} tasks drawn from the evaluation seed {seed} (the authors' test tasks are not "
                  "reproduced)")
    return (f"As the published values were measured: {where}, collected to their step budget as rllab's "
            f"vectorised sampler collects (`steps` protocol: {n} environments per task run until their finished "
            f"episodes hold {n} x horizon steps; episodes still running are dropped, so episodes that end early "
            "count more; rllab's vectorised sampler is what their code ran when the result files were made, "
            "their later test scripts run its parallel sampler, the `workers` protocol, which keeps them), and "
            + ("every step taken at half the inner step, as their test code took them from February to April 2017."
               if evaluation == HALF_FIRST_STEP else f"the steps after the first taken at "
               f"{settings['later_step_scale']:g} times the first, as their test does."))


def published_budget(family: str) -> str:
    """The training budget behind the family's published MAML row, in words."""
    if family not in PUBLISHED_BUDGETS:
        return "no published run"
    iterations, tasks, episodes = PUBLISHED_BUDGETS[family]
    source = "the paper's" if family == "navigation" else "the checkpoint of the authors' July 2017 test script"
    return f"{source}: {iterations} x {tasks} x {episodes}"


TITLES = {"navigation": "2D navigation", "halfcheetah-vel": "HalfCheetah velocity",
          "halfcheetah-dir": "HalfCheetah direction", "ant-vel": "Ant velocity", "ant-dir": "Ant direction",
          "ant-goal": "Ant goal"}


def config_path(family: str, method: str) -> Path:
    return ROOT / "configs" / f"{family}-{method}.yaml"


def run_dir(runs: Path, method: str, seed: int) -> Path:
    return runs / f"{method}-seed{seed}"


def train(config: Path, directory: Path, seed: int, overrides: list[str]) -> float:
    """Train and evaluate one run with the ``metarl`` command; returns its wall time in seconds.

    A run that stopped after a checkpoint (or that finished fewer iterations than ``--set
    train.iterations=N`` asks) continues from its newest checkpoint with ``metarl train --resume``,
    which gives the numbers of an uninterrupted run; its wall time then counts the earlier
    iterations' training time too.
    """
    finished = directory / "wall_time.json"  # written last: the run trained and evaluated
    if finished.exists():
        return float(json.loads(finished.read_text())["seconds"])
    resumed_at = newest_checkpoint(directory)
    if resumed_at is None:
        shutil.rmtree(directory, ignore_errors=True)  # an interrupted run without a checkpoint starts again
        command = [sys.executable, "-m", "metarl", "train", str(config), f"seed={seed}", f"run.dir={directory}",
                   "train.threads=1", "logging.wandb.mode=disabled", *overrides, "--quiet"]
    else:
        command = [sys.executable, "-m", "metarl", "train", "--resume", str(directory), *overrides, "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, env=metarl_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training {config.name} with seed {seed} failed:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - start + training_seconds(directory, before=resumed_at or 0)
    (directory / "wall_time.json").write_text(json.dumps({"seconds": seconds}) + "\n")
    print(f"  {directory.name}: {seconds:.0f} s", flush=True)
    return seconds


def newest_checkpoint(directory: Path) -> int | None:
    """The iteration of a run directory's newest checkpoint, or None without a run or checkpoint."""
    if not (directory / "config.yaml").is_file():
        return None
    names = (re.fullmatch(r"checkpoint-(\d+)\.pt", path.name) for path in (directory / "checkpoints").glob("*.pt"))
    return max((int(name.group(1)) for name in names if name), default=None)


def training_seconds(directory: Path, before: int) -> float:
    """Seconds the run's meta-iterations before ``before`` took (``metrics.jsonl``)."""
    path = directory / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sum(record["time_s"] for record in records if record["iteration"] < before)


def metarl_environment() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def evaluation_overrides(family: str, evaluation: str) -> list[str]:
    return [f"evaluation.{key}={'null' if value is None else value}"
            for key, value in evaluation_settings(family, evaluation).items()]


def result_path(directory: Path, family: str, method: str, overrides: list[str], evaluation: str) -> Path:
    """Where the run's evaluation ``evaluation`` (with its config's other settings) is saved."""
    config = load_config(config_path(family, method), [*overrides, *evaluation_overrides(family, evaluation)])
    settings = config.evaluation
    return evaluation_path(directory, num_tasks=settings.tasks, steps=settings.steps, seed=settings.seed,
                           episodes_per_task=settings.episodes_per_task or config.meta.episodes_per_task,
                           protocol=settings.protocol, task_set=settings.task_set,
                           later_step_scale=settings.later_step_scale, first_step_scale=settings.first_step_scale,
                           workers=settings.workers if settings.protocol == "workers" else None)


def evaluation_of(family: str, method: str, overrides: list[str], evaluation: str) -> str:
    """The evaluation that stands for ``evaluation``: a method evaluated without adaptation steps
    (the oracle) takes no step to halve, so its published evaluation stands for the half-step one."""
    if evaluation == HALF_FIRST_STEP and load_config(config_path(family, method), overrides).evaluation.steps == 0:
        return "published"
    return evaluation


def evaluate_run(directory: Path, family: str, method: str, overrides: list[str], evaluation: str) -> None:
    """Evaluate a trained run (``metarl evaluate``) as ``evaluation`` says, unless done."""
    if result_path(directory, family, method, overrides, evaluation).exists():
        return
    settings = evaluation_settings(family, evaluation)
    command = [sys.executable, "-m", "metarl", "evaluate", str(directory), "--protocol", settings["protocol"],
               *(["--task-set", settings["task_set"]] if settings["task_set"] else []),
               "--later-step-scale", str(settings["later_step_scale"]),
               "--first-step-scale", str(settings["first_step_scale"]), "--quiet"]
    done = subprocess.run(command, env=metarl_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"evaluating {directory} ({evaluation}) failed:\n{done.stderr[-3000:]}")


def iteration_seconds(directory: Path) -> float | None:
    """Median seconds per meta-iteration of a run (None for a run without training)."""
    path = directory / "metrics.jsonl"
    times = [json.loads(line)["time_s"] for line in path.read_text().splitlines()] if path.exists() else []
    return statistics.median(times) if times else None


def mean_and_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +/- {statistics.stdev(values) / len(values) ** 0.5:.1f}"


def returns_table(results: dict[tuple[str, int], EvaluationResult], family: str, methods: list[str],
                  seeds: list[int], steps: list[int]) -> str:
    """Mean over seeds (+/- standard error over seeds) per method and step, beside the published values."""
    rows = []
    for method in methods:
        per_step = []
        for k in steps:
            values = [results[(method, s)].mean_return[results[(method, s)].steps.index(k)]
                      for s in seeds if k in results[(method, s)].steps]
            per_step.append(mean_and_spread(values) if values else "")
        published = PUBLISHED[family].get(method)
        rows.append((LABELS[method], *per_step, " / ".join(map(str, published)) if published else "not published"))
    return format_table(["method", *[f"{k} steps" for k in steps], "published (0 / 1 / 2 / 3)"], rows, markdown=True)


def over_seeds(results: dict[tuple[str, int], EvaluationResult], method: str, seeds: list[int]) -> EvaluationResult:
    """One method's result as the plot shows it: the mean over seeds at each step, +/- the standard
    error over seeds (over the held-out tasks with one seed)."""
    runs = [results[(method, s)] for s in seeds]
    if len(runs) == 1:
        return runs[0]
    steps = [k for k in runs[0].steps if all(k in r.steps for r in runs)]
    values = [[r.mean_return[r.steps.index(k)] for r in runs] for k in steps]
    return replace(runs[0], steps=steps, mean_return=[statistics.mean(v) for v in values],
                   stderr=[statistics.stdev(v) / len(v) ** 0.5 for v in values])


def summarise(family: str, methods: list[str], runs: Path, seeds: list[int], walls: dict[tuple[str, int], float],
              out: Path, page: str, command: str, jobs: int, overrides: list[str],
              evaluations: tuple[str, ...] = EVALUATIONS) -> str:
    results = {e: {(m, s): EvaluationResult.load(result_path(run_dir(runs, m, s), family, m, overrides,
                                                             evaluation_of(family, m, overrides, e)))
                   for m in methods for s in seeds}
               for e in evaluations}
    first = results["unbiased"][(methods[0], seeds[0])]
    steps = first.steps
    config = load_config(config_path(family, methods[0]), overrides)
    n = first.episodes_per_task
    lines = [f"# {TITLES[family]}: {', '.join(LABELS[m] for m in methods)} against Finn et al. (2017)", "",
             f"Written by `{command}` (`scripts/reproduce_maml_rl.py`).", "",
             f"Every run is evaluated {'twice' if len(evaluations) == 2 else f'{len(evaluations)} times'}, each time "
             f"on the same {first.num_tasks} held-out tasks for all runs, after 0..{steps[-1]} policy-gradient steps, "
             + ("the first of the training inner step: as the published values were measured, and unbiased "
                "(`metarl evaluate --protocol --task-set --later-step-scale`"
                if HALF_FIRST_STEP not in evaluations else
                "as the published values were measured (the first of the training inner step), the same with every "
                "step at half the inner step, and unbiased (`metarl evaluate --protocol --task-set --later-step-scale "
                "--first-step-scale`")
             + f", see docs/evaluation-protocols.md). Seeds: {', '.join(map(str, seeds))}. Training budget "
             f"per run: {config.train.iterations} meta-iterations of {config.meta.batch_tasks} tasks x "
             f"{config.meta.episodes_per_task} episodes ({published_budget(family)}). Configs: "
             f"`configs/{family}-<method>.yaml`" + (f" with `{' '.join(overrides)}`" if overrides else "") + ".", "",
             f"Trainings ran {jobs} at a time on this two-core machine, one torch thread each; the times "
             "below include any other load the machine had.", ""]
    for evaluation in evaluations:
        lines += [f"## Mean return on held-out tasks, {evaluation}", "",
                  describe(family, evaluation, n, first.num_tasks, first.seed) + " Mean over seeds +/- standard "
                  "error over seeds.", "", returns_table(results[evaluation], family, methods, seeds, steps), ""]
    if "oracle" in methods:
        lines += ["The oracle sees the goal and is not adapted: its one number is its return.", ""]
    lines += ["## Per seed (mean return +/- standard error over the held-out tasks)", ""]
    rows = []
    for method in methods:
        for s in seeds:
            for evaluation in evaluations:
                r = results[evaluation][(method, s)]
                rows.append((LABELS[method], s, evaluation,
                             *[f"{m:.2f} +/- {e:.2f}" for m, e in zip(r.mean_return, r.stderr)]))
    lines += [format_table(["method", "seed", "evaluation", *[f"{k} steps" for k in steps]], rows, markdown=True), ""]
    rows = []
    for method in methods:
        per_iteration = [iteration_seconds(run_dir(runs, method, s)) for s in seeds]
        per_iteration = [t for t in per_iteration if t is not None]
        rows.append((LABELS[method], f"{statistics.median(per_iteration):.3f}" if per_iteration else "-",
                     f"{statistics.mean(walls[(method, s)] for s in seeds) / 60:.1f}"))
    lines += ["## Time (this machine, one torch thread per run)", "",
              format_table(["method", "median s / meta-iteration", "minutes per run (train + evaluate)"], rows,
                           markdown=True), "", f"![adaptation curves]({page}.png)", ""]
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"
    plot_adaptation({LABELS[m]: over_seeds(results["published"], m, seeds) for m in methods}, out / f"{page}.png",
                    title=f"{TITLES[family]}, {which}\n{first.num_tasks} held-out tasks, evaluated as published")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(TITLES), default="navigation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run in parallel")
    parser.add_argument("--page", default=None, help="name of the page and plot (default: the family)")
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/reproduce-<page>")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--half-first-step", action="store_true",
                        help="also evaluate as published with every step at half the inner step (the authors' test "
                             "code from February to April 2017)")
    args = parser.parse_args()
    evaluations = (*EVALUATIONS, HALF_FIRST_STEP) if args.half_first_step else EVALUATIONS
    page_name = args.page or args.family
    runs = args.runs or ROOT / "runs" / f"reproduce-{page_name}"
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    print(f"{len(jobs)} runs under {runs}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        walls = dict(zip(jobs, pool.map(
            lambda job: train(config_path(args.family, job[0]), run_dir(runs, *job), job[1], args.set),
            jobs)))
        wanted = {(job, evaluation_of(args.family, job[0], args.set, e)) for job in jobs for e in evaluations}
        list(pool.map(lambda item: evaluate_run(run_dir(runs, *item[0]), args.family, item[0][0], args.set, item[1]),
                      sorted(wanted)))  # training did the unbiased one
    command = shlex.join(["python", "scripts/reproduce_maml_rl.py", "--family", args.family,
                          "--seeds", *map(str, args.seeds)]
                         + (["--methods", *args.methods] if list(args.methods) != list(METHODS) else [])
                         + (["--set", *args.set] if args.set else []) + (["--page", page_name] if args.page else [])
                         + (["--half-first-step"] if args.half_first_step else []))
    page = summarise(args.family, args.methods, runs, args.seeds, walls, args.out, page_name, command, args.jobs,
                     args.set, evaluations)
    (args.out / f"{page_name}.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()
