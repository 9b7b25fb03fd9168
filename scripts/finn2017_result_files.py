"""What Finn et al.'s (2017) result files hold, task by task, and our runs' one-step gains beside them.

The authors keep the per-task returns behind the paper's table in their repository (cbfinn/maml_rl,
``icml/icml_<family>_results_<method>.pkl``: the mean return of each of their 40 test tasks after 0..3
gradient steps). This script reads them from a local copy of that repository (a work tree or a bare
git directory) and reports, per file, how many of its 40 task rows are distinct and, on the direction
families, the mean per direction. With ``--runs`` it sets our runs' one-step gains, task by task (their
evaluation as published), beside the authors' gain in each direction. ``--commit`` reads the files as an
earlier commit holds them (the authors' February 2017 results, ``7fe27d7``)::

    python scripts/finn2017_result_files.py PATH/TO/maml_rl \\
        --runs runs/reproduce-halfcheetah-dir/random-seed* --out docs/results/finn2017-result-files.md
"""

from __future__ import annotations

import argparse
import functools
import io
import pickle
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from reproduce_maml_rl import evaluation_settings

from envs import make_family
from metarl.experiment.config import load_config
from metarl.experiment.evaluation import EvaluationResult, evaluation_path
from metarl.experiment.metrics import format_table

# The authors' file prefix -> our family name.
FAMILIES = {"point": "navigation", "cheetah": "halfcheetah_vel", "cheetahdirec": "halfcheetah_dir",
            "ant": "ant_vel", "antdirec": "ant_dir"}
# Our config's method -> the authors' file suffix (they published no FO-MAML or HF-MAML: MAML's).
AUTHORS_METHOD = {"maml": "maml", "fomaml": "maml", "hfmaml": "maml", "pretrained": "pretrain", "random": "random",
                  "oracle": "oracle"}


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"refused {module}.{name}: a result file holds only lists of numbers")


def task_returns(name: str, data: bytes) -> list[list[float]]:
    """A result file's returns, one row per task (return after 0, 1, ... steps)."""
    try:
        content = _PlainData(io.BytesIO(data), encoding="latin1").load()
        steps = content["task_avg_returns"]
        rows = [[float(value) for value in row] for row in zip(*steps, strict=True)]
    except Exception as error:  # any damage: a truncated pickle, another layout, a refused object
        raise ValueError(f"{name} is not one of the authors' result files: {error}") from None
    if not rows:
        raise ValueError(f"{name} holds no task")
    return rows


def result_files(repository: Path, commit: str = "HEAD") -> dict[str, bytes]:
    """The ``icml/icml_*_results_*.pkl`` files of a work tree or of a bare git directory (at ``commit``)."""
    if commit == "HEAD" and (repository / "icml").is_dir():
        return {path.name: path.read_bytes() for path in sorted((repository / "icml").glob("icml_*_results_*.pkl"))}
    git_dir = repository / ".git" if (repository / ".git").exists() else repository
    git = ["git", "--git-dir", str(git_dir)]
    listing = subprocess.run([*git, "ls-tree", "--name-only", commit, "icml/"], capture_output=True, text=True)
    if listing.returncode != 0:
        raise SystemExit(f"{repository} at {commit} is neither a work tree with icml/ nor a git directory: "
                         f"{listing.stderr.strip()}")
    names = [n for n in listing.stdout.split() if Path(n).name.startswith("icml_") and "_results_" in n
             and n.endswith(".pkl")]
    return {Path(n).name: subprocess.run([*git, "show", f"{commit}:{n}"], capture_output=True, check=True).stdout
            for n in sorted(names)}


def split_name(name: str) -> tuple[str, str]:
    """``icml_cheetahdirec_results_random.pkl`` -> ``("cheetahdirec", "random")``."""
    prefix, method = name.removeprefix("icml_").removesuffix(".pkl").split("_results_")
    return prefix, method


@functools.cache
def test_tasks(family: str) -> tuple[list[dict], int]:
    """The authors' 40 test tasks of a family (``finn2017`` task set) and its horizon."""
    built = make_family(family)
    return built.task_set("finn2017"), built.horizon


def directions(family: str) -> list[float] | None:
    """The direction of each of the authors' 40 test tasks, on a direction family."""
    return [float(task["direction"]) for task in test_tasks(family)[0]] if family.endswith("_dir") else None


def shared_before_rollouts(family: str, before: list[float]) -> str:
    """On a velocity family, whether the returns before adaptation are a concave function of the goal
    velocity with slopes within +/- horizon: what one set of rollouts scored against every goal gives
    (``-sum_t |v_t - goal|`` plus goal-free terms); independent rollouts per task break it."""
    if not family.endswith("_vel"):
        return ""
    tasks, horizon = test_tasks(family)
    goals, returns = zip(*sorted(zip((task["velocity"] for task in tasks), before)))
    slopes = [(r1 - r0) / (g1 - g0) for g0, g1, r0, r1 in zip(goals, goals[1:], returns, returns[1:])]
    concave = all(b <= a + 1e-6 * horizon for a, b in zip(slopes, slopes[1:]))
    return "yes" if concave and all(abs(x) <= horizon * (1 + 1e-6) for x in slopes) else "no"


def by_step(rows: list[list[float]]) -> str:
    return " / ".join(f"{statistics.mean(column):.1f}" for column in zip(*rows))


def files_table(files: dict[str, bytes]) -> str:
    table = []
    for name, data in files.items():
        prefix, _ = split_name(name)
        rows = task_returns(name, data)
        signs = directions(FAMILIES[prefix]) if prefix in FAMILIES else None
        forward = backward = ""
        if signs is not None and len(signs) == len(rows):
            forward = by_step([r for r, s in zip(rows, signs) if s > 0])
            backward = by_step([r for r, s in zip(rows, signs) if s < 0])
        shared = shared_before_rollouts(FAMILIES.get(prefix, ""), [r[0] for r in rows]) if len(rows) == 40 else ""
        table.append((name, len(rows), len({tuple(r) for r in rows}), by_step(rows), forward, backward, shared))
    return format_table(["file", "tasks", "distinct task rows", "mean after 0 / 1 / ... steps", "forward tasks",
                         "backward tasks", "before: one set of rollouts for all tasks"], table, markdown=True)


def published_evaluation(run: Path) -> tuple[str, str, EvaluationResult]:
    """A run's family, method and its evaluation as the published values were measured (the
    settings of ``scripts/reproduce_maml_rl.py``)."""
    config = load_config(run / "config.yaml")
    settings = evaluation_settings(config.env.family.replace("_", "-"), "published")
    path = evaluation_path(run, num_tasks=config.evaluation.tasks, steps=config.evaluation.steps,
                           episodes_per_task=config.evaluation.episodes_per_task or config.meta.episodes_per_task,
                           seed=config.evaluation.seed, **settings)
    command = (f"metarl evaluate {run} --protocol {settings['protocol']} --task-set {settings['task_set']} "
               f"--later-step-scale {settings['later_step_scale']:g}")
    if not path.exists():
        raise SystemExit(f"{run} has no evaluation as published ({path.name}); write it with: {command}")
    result = EvaluationResult.load(path)
    if result.task_returns is None:
        raise SystemExit(f"{path} predates per-task returns; evaluate again with: {command}")
    return config.env.family, config.name.rsplit("-", 1)[-1], result


def gains_table(runs: list[Path], files: dict[str, bytes]) -> str:
    """Per (method, direction): our per-task returns before and after one step and one-step gains,
    against the authors'."""
    ours: dict[tuple[str, str, float], list[tuple[float, float]]] = {}
    for run in runs:
        family, method, result = published_evaluation(run)
        signs = directions(family)
        if signs is None:
            raise SystemExit(f"{run}: --runs takes runs of a direction family, not {family}")
        for sign, before, after in zip(signs, result.task_returns[0], result.task_returns[1]):
            ours.setdefault((family, method, sign), []).append((before, after))
    prefixes = {family: prefix for prefix, family in FAMILIES.items()}
    table = []
    for (family, method, sign), pairs in sorted(ours.items()):
        name = f"icml_{prefixes[family]}_results_{AUTHORS_METHOD[method]}.pkl"
        authors = [r[:2] for r, s in zip(task_returns(name, files[name]), directions(family)) if s == sign]
        gains = [after - before for before, after in pairs]
        theirs = statistics.mean(after - before for before, after in authors)
        mean, spread = statistics.mean(gains), statistics.stdev(gains)
        table.append((method, "forward" if sign > 0 else "backward", len(gains), by_step(pairs), f"{mean:.1f}",
                      f"{spread:.1f}", f"{min(gains):.1f} .. {max(gains):.1f}", AUTHORS_METHOD[method],
                      by_step(authors), f"{theirs:.1f}",
                      f"{(theirs - mean) / spread:+.1f}", f"{sum(g >= theirs for g in gains) / len(gains):.2f}"))
    return format_table(["method", "tasks", "our task runs", "ours before / after", "our mean gain", "sd", "range",
                         "authors' file", "authors' before / after", "authors' gain", "authors' in our sd",
                         "share of ours >= authors'"], table, markdown=True)


def report(repository: Path, runs: list[Path], commit: str = "HEAD") -> str:
    """The page's sections: the authors' files (at ``commit``), then our runs' gains beside theirs."""
    files = result_files(repository, commit)
    if not files:
        raise SystemExit(f"{repository} holds no icml/icml_*_results_*.pkl file")
    sections = ["## The authors' result files", "",
                ("Each file: the mean return of each of the authors' 40 test tasks after 0..3 steps (one step: "
                 "oracle); the mean over tasks, and per direction on the direction families (tasks from their "
                 "test scripts' draws, `finn2017` task set). A file with 2 distinct task rows holds two runs, "
                 "one per direction, each repeated for every task of its direction. On the velocity families, "
                 "`yes` in the last column: the returns before adaptation are a concave function of the goal "
                 "velocity with slopes within +/- the horizon, as one set of rollouts scored against every goal "
                 "gives; independent rollouts per task would break that."), "", files_table(files), ""]
    if runs:
        sections += ["## One-step gains task by task: our runs beside the authors'", "",
                     ("Our gain: return after one step minus before, per task, in our runs' evaluation as "
                      "published (one run of 20 x horizon steps per task and step). The authors' gain: the "
                      "same in their file, mean over the tasks of that direction. `authors' in our sd`: "
                      "(authors' - our mean) / our sd, where their file holds one run per direction."), "",
                     f"Runs: {', '.join(run.name for run in runs)}.", "", gains_table(runs, files), ""]
    return "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="a copy of cbfinn/maml_rl: work tree or bare git directory")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="our runs of a direction family")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown page")
    parser.add_argument("--commit", default="HEAD", help="the files as of this commit of the repository "
                        "(7fe27d7: the ICML deadline's, February 2017; 4d41869: the published ones, April 2017)")
    args = parser.parse_args()
    try:
        page = report(args.repository, args.runs, args.commit)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(page)
    if args.out is not None:
        command = shlex.join(["python", "scripts/finn2017_result_files.py", *sys.argv[1:]])
        args.out.write_text(f"# Finn et al.'s (2017) result files, task by task\n\nWritten by `{command}` "
                            "(`scripts/finn2017_result_files.py`).\n\n" + page)


if __name__ == "__main__":
    main()
