"""How much does meta-learning buy? SB3 PPO from scratch against one adaptation step.

For each of the first N held-out tasks of a finished run (the tasks ``metarl evaluate RUN_DIR``
draws: the run's ``evaluation.seed``, the evaluation task stream), the meta-learned policy takes
one policy-gradient step as ``metarl evaluate`` takes it (``metarl.experiment.evaluation.adapt_to_tasks``,
``evaluation.episodes_per_task`` episodes); its mean return before (0 steps) and after (1 step) is
the mean of the sampled episodes, as ``metarl evaluate`` reports it. Stable-Baselines3 PPO then
trains from scratch on the task's environment (``family.make_env(task)``) for ``--budget`` env
steps. After every PPO update (every ``n_steps`` env steps, the only points where its policy
changes) and before the first, PPO's *stochastic* policy is evaluated on as many sampled episodes
as metarl's estimate uses, on the family's batched environment (the one metarl's sampler steps),
so both returns are the same kind of number. Reported per task: the first PPO env-step count
at which that evaluation reaches the task's 1-step return ("> budget" if never), beside the env
steps of metarl's adaptation step; evaluation episodes are counted on neither side.

PPO's network is ``MlpPolicy`` with the metarl policy's hidden sizes and activation for actor
and critic (``--net metarl``, default: the same capacity as the meta-learned policy) or SB3's own
64x64 tanh (``--net sb3``). Its hyper-parameters are SB3's defaults for every family (what
``PPO("MlpPolicy", env)`` gives a user; every one is a flag): learning rate 3e-4, n_steps 2048,
batch size 64, 10 epochs, gamma 0.99, GAE lambda 0.95, clip range 0.2, no entropy bonus, initial
action std 1 (metarl's ``policy.init_std`` default). rl-zoo3's tuned HalfCheetah values are for
the standard forward-running reward and are not used.

    python scripts/compare_sb3.py RUN_DIR [--tasks 10] [--budget 200000] [--seeds 0 1]
        [--net metarl|sb3] [--learning-rate 3e-4 ...] [--page NAME] [--out docs/results]
        [--cache runs/compare-sb3]

Writes ``<out>/<page>.md`` (the tables) and ``<out>/<page>.png`` (PPO's return against env
steps, mean over tasks and seeds, with the meta-learned 0-step and 1-step returns as levels).
Each PPO training's curve is kept in ``--cache`` under a hash of everything it depends on (family,
task, PPO settings, budget, seed), so an interrupted comparison continues where it stopped and
runs of the same family share PPO's trainings. Torch uses one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import Task, TaskFamily
from metarl.cli import finished_run
from metarl.experiment.build import build_family, build_policy
from metarl.experiment.config import Config, load_config
from metarl.experiment.evaluation import adapt_to_tasks, held_out_tasks
from metarl.experiment.metrics import format_table, read_metrics
from metarl.experiment.plotting import pyplot
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.integrations.sb3 import require_sb3
from metarl.params import Params
from metarl.rl.sb3_weights import sb3_policy_kwargs

require_sb3()
from stable_baselines3 import PPO  # after the check that says what to install
from stable_baselines3.common.callbacks import BaseCallback

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PPOSettings:
    """PPO's hyper-parameters (SB3's defaults); each field is a ``--flag`` of the script."""

    learning_rate: float = 3e-4
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0


@dataclass
class MetaReturns:
    """The meta-learned policy on each held-out task: mean return of its sampled episodes before
    and after one adaptation step, and the env steps of the episodes that step used."""

    before: list[float]
    after: list[float]
    adaptation_steps: list[int]


@dataclass
class Curve:
    """PPO's evaluated return after 0, n_steps, 2 n_steps, ... training env steps; wall time."""

    steps: list[int]
    returns: list[float]
    seconds: float


def meta_returns(config: Config, params: Params, tasks: list[Task]) -> MetaReturns:
    """Returns before and after one adaptation step on each task, as ``metarl evaluate`` measures them."""
    _, batches = adapt_to_tasks(config, params, tasks, steps=1, seed=config.evaluation.seed)
    before, after = (batch.episodes.episode_returns().mean(1).tolist() for batch in batches)
    steps = batches[0].episodes.mask.sum((0, 2)).long().tolist()
    return MetaReturns(before, after, steps)


def sampled_returns(model: PPO, env: Any, rng: np.random.Generator) -> np.ndarray:
    """Undiscounted return of one sampled (stochastic) episode per copy of the batched ``env``."""
    obs = env.reset(rng.integers(2**31, size=env.num_envs))
    total = np.zeros(env.num_envs)
    for _ in range(env.horizon):
        actions, _ = model.predict(obs, deterministic=False)
        obs, rewards, terminated, truncated = env.step(actions)
        total += rewards  # a finished copy returns reward 0.0
        if np.all(terminated | truncated):
            break
    return total


class EvaluateAfterUpdates(BaseCallback):
    """Evaluates the policy before each rollout (that is, after each update) and at the end."""

    def __init__(self, env: Any, seed: int) -> None:
        super().__init__()
        self.env, self.rng = env, np.random.default_rng(seed)
        self.steps: list[int] = []
        self.returns: list[float] = []

    def _evaluate(self) -> None:
        self.steps.append(self.num_timesteps)
        self.returns.append(float(sampled_returns(self.model, self.env, self.rng).mean()))

    def _on_rollout_start(self) -> None:
        self._evaluate()

    def _on_training_end(self) -> None:
        self._evaluate()

    def _on_step(self) -> bool:
        return True


def train_ppo(family: TaskFamily, task: Task, settings: PPOSettings, policy_kwargs: dict[str, Any], budget: int,
              eval_episodes: int, seed: int) -> Curve:
    """Train PPO from scratch on ``task`` for ``budget`` env steps (rounded up to whole rollouts)."""
    env, eval_env = family.make_env(task), family.make_batched([task] * eval_episodes)
    start = time.perf_counter()
    model = PPO("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu",
                **dataclasses.asdict(settings))
    callback = EvaluateAfterUpdates(eval_env, seed)
    model.learn(budget, callback=callback)
    env.close()
    getattr(eval_env, "close", lambda: None)()
    return Curve(callback.steps, callback.returns, time.perf_counter() - start)


def cached_ppo(cache: Path, key: dict[str, Any], train: Callable[[], Curve]) -> Curve:
    """The curve stored under ``key`` in ``cache``, or ``train()``'s, stored there first."""
    path = cache / f"ppo-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
    if path.exists():
        return Curve(**json.loads(path.read_text())["curve"])
    curve = train()
    cache.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"key": key, "curve": dataclasses.asdict(curve)}) + "\n")
    temporary.replace(path)
    return curve


def steps_to_reach(curve: Curve, target: float) -> int | None:
    """The first evaluated env-step count whose return is at least ``target`` (None: never)."""
    return next((steps for steps, value in zip(curve.steps, curve.returns) if value >= target), None)


def net_text(policy_kwargs: dict[str, Any]) -> str:
    """PPO's network in words: hidden sizes of actor and critic, and activation."""
    if not policy_kwargs:
        return "SB3's default (64x64, tanh)"
    arch, activation = policy_kwargs["net_arch"], policy_kwargs["activation_fn"].__name__
    return f"actor {'x'.join(map(str, arch['pi']))}, critic {'x'.join(map(str, arch['vf']))}, {activation}"


def jsonable_task(task: Task) -> dict[str, Any]:
    return {key: np.asarray(value).tolist() for key, value in task.items()}


def describe_task(task: Task) -> str:
    return ", ".join(f"{key} {np.round(np.asarray(value, dtype=float), 2).tolist()}" for key, value in task.items())


def steps_text(steps: float | None, budget: int) -> str:
    return f"> {budget:,}" if steps is None or steps == float("inf") else f"{steps:,.0f}"


def ratio_text(steps: float | None, metarl_steps: float, budget: int) -> str:
    if steps is None or steps == float("inf"):
        return f"> {budget / metarl_steps:.0f}x"
    return f"{steps / metarl_steps:.1f}x"


def median_steps(reached: list[int | None]) -> float:
    """Median env steps with the never-reached counted as infinitely many."""
    return statistics.median(float("inf") if s is None else s for s in reached)


def mean_steps_text(reached: list[int | None], budget: int) -> str:
    """The mean, or a lower bound ("> ...") with the never-reached counted at the budget."""
    mean = statistics.mean(budget if s is None else s for s in reached)
    return f"> {mean:,.0f}" if None in reached else f"{mean:,.0f}"


@dataclass
class Comparison:
    """Everything the page and the plot show."""

    config: Config
    run_dir: Path
    tasks: list[Task]
    meta: MetaReturns
    curves: dict[tuple[int, int], Curve]  # (task index, PPO seed) -> curve
    seeds: list[int]
    budget: int
    settings: PPOSettings
    policy_kwargs: dict[str, Any]
    eval_episodes: int

    def reached(self, task: int, seed: int) -> int | None:
        return steps_to_reach(self.curves[(task, seed)], self.meta.after[task])

    def all_reached(self) -> list[int | None]:
        """PPO's env steps to each task's 1-step return, for every task and seed."""
        return [self.reached(i, s) for i in range(len(self.tasks)) for s in self.seeds]


def summary_table(c: Comparison) -> str:
    reached = c.all_reached()
    adaptation = statistics.mean(c.meta.adaptation_steps)
    median = median_steps(reached)
    rows = [("meta-learned, 0 steps", f"{statistics.mean(c.meta.before):.2f}", "0", ""),
            ("meta-learned, 1 step", f"{statistics.mean(c.meta.after):.2f}", f"{adaptation:,.0f}", "1x"),
            ("PPO from scratch to each task's 1-step return: median", "",
             steps_text(median, c.budget), ratio_text(median, adaptation, c.budget)),
            ("PPO from scratch to each task's 1-step return: mean", "", mean_steps_text(reached, c.budget), ""),
            ("PPO tasks x seeds that reached it", "", f"{sum(r is not None for r in reached)} of {len(reached)}", "")]
    return format_table(["", "mean return over tasks", "env steps on the task", "env steps / metarl's"], rows,
                        markdown=True)


def task_table(c: Comparison) -> str:
    rows = []
    for i, task in enumerate(c.tasks):
        reached = [c.reached(i, s) for s in c.seeds]
        rows.append((i, describe_task(task), f"{c.meta.before[i]:.2f}", f"{c.meta.after[i]:.2f}",
                     f"{c.meta.adaptation_steps[i]:,}", *(steps_text(r, c.budget) for r in reached),
                     ratio_text(median_steps(reached), c.meta.adaptation_steps[i], c.budget)))
    header = ["task", "parameters", "0 steps", "1 step (target)", "metarl env steps",
              *(f"PPO env steps (seed {s})" for s in c.seeds), "PPO / metarl (median over seeds)"]
    return format_table(header, rows, markdown=True)


def meta_training_text(c: Comparison) -> list[str]:
    """The meta-training's own env steps and, against PPO's median, after how many new tasks they are repaid."""
    path = c.run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.exists() else []
    if not records:
        return []
    total = records[-1]["env_steps"]
    saved = median_steps(c.all_reached()) - statistics.mean(c.meta.adaptation_steps)
    lines = [f"Meta-training itself took {total:,} env steps ({len(records)} meta-iterations, `metrics.jsonl`), "
             "not counted above."]
    if saved == float("inf"):
        lines.append("PPO's median did not reach the target within the budget, so the break-even number of "
                     f"tasks is below {total / (c.budget - statistics.mean(c.meta.adaptation_steps)):,.0f}.")
    elif saved > 0:
        lines.append(f"Against PPO's median, it is repaid in env steps after about {total / saved:,.0f} new tasks.")
    else:
        lines.append("PPO's median needs no more env steps than the adaptation step: it is never repaid.")
    return [" ".join(lines), ""]


def write_page(c: Comparison, out: Path, page: str, command: str) -> str:
    """The markdown page (returned and written to ``out/<page>.md``) and its plot ``out/<page>.png``."""
    config, family = c.config, build_family(c.config)
    episodes = config.evaluation.episodes_per_task or config.meta.episodes_per_task
    curves = list(c.curves.values())
    ppo_seconds = statistics.mean(curve.seconds for curve in curves)
    ppo_steps = statistics.mean(curve.steps[-1] for curve in curves)
    settings = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(c.settings).items())
    lines = [f"# How much does meta-learning buy? `{config.name}` against SB3 PPO from scratch", "",
             f"Written by `{command}` (`scripts/compare_sb3.py`).", "",
             f"The meta-learned policy of `{c.run_dir.name}` (`meta.method: {config.meta.method}`, family "
             f"`{config.env.family}`, horizon {family.horizon}) takes one policy-gradient step with the run's inner "
             f"step on each of the first {len(c.tasks)} held-out tasks of `metarl evaluate` (evaluation seed "
             f"{config.evaluation.seed}), on {episodes} episodes per task. Its return is the mean of {episodes} "
             "sampled episodes before (0 steps) and after (1 step) that step.", "",
             f"SB3 PPO trains from scratch on each task's environment for {c.budget:,} env steps (seeds "
             f"{', '.join(map(str, c.seeds))}; the budget is rounded up to whole rollouts): `MlpPolicy`, "
             f"{net_text(c.policy_kwargs)}; "
             f"hyper-parameters (SB3's defaults unless the command says otherwise): {settings}. Before its first "
             f"update and after each update (every {c.settings.n_steps:,} env steps) its stochastic policy is "
             f"evaluated on {c.eval_episodes} sampled episodes. *PPO env steps* is the first training env-step count "
             "at which that mean return reaches the task's 1-step return (\"> budget\": never). Evaluation episodes "
             "are counted on neither side.", "",
             "## Summary", "", summary_table(c), "", *meta_training_text(c),
             "## Per task", "", task_table(c), "",
             f"PPO took {ppo_seconds:.0f} s per task and seed on this machine (one torch thread, evaluations "
             f"included): {ppo_steps / ppo_seconds:,.0f} env steps/s.", "",
             f"![PPO's return against env steps]({page}.png)", ""]
    plot(c, out / f"{page}.png")
    text = "\n".join(lines)
    (out / f"{page}.md").write_text(text)
    return text


def plot(c: Comparison, path: Path) -> None:
    """PPO's return against env steps (each task and seed faint, their mean bold) and the
    meta-learned 0-step and 1-step mean returns as levels."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for curve in c.curves.values():
        axes.plot(curve.steps, curve.returns, color="tab:blue", alpha=0.15, linewidth=0.8)
    length = min(len(curve.steps) for curve in c.curves.values())
    steps = next(iter(c.curves.values())).steps[:length]
    mean = np.mean([curve.returns[:length] for curve in c.curves.values()], axis=0)
    axes.plot(steps, mean, color="tab:blue", linewidth=2, label="SB3 PPO from scratch (mean over tasks, seeds)")
    adaptation = statistics.mean(c.meta.adaptation_steps)
    before, after = statistics.mean(c.meta.before), statistics.mean(c.meta.after)
    axes.axhline(before, color="tab:gray", linestyle="--", label="meta-learned, 0 steps")
    axes.axhline(after, color="tab:red", label="meta-learned, 1 step")
    axes.plot([adaptation], [after], "o", color="tab:red")
    axes.annotate(f"1 adaptation step: {adaptation:,.0f} env steps", (adaptation, after), xytext=(8, 6),
                  textcoords="offset points", color="tab:red")
    axes.set_xlabel("PPO training env steps on the task")
    axes.set_ylabel(f"mean return ({len(c.tasks)} held-out tasks)")
    axes.set_title(f"{c.config.name}: SB3 PPO from scratch vs one adaptation step", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def compare(run_dir: Path, num_tasks: int, budget: int, seeds: list[int], settings: PPOSettings, net: str,
            eval_episodes: int | None, cache: Path) -> Comparison:
    """Meta-learned returns and PPO curves on the first ``num_tasks`` held-out tasks of the run."""
    config = load_config(run_dir / "config.yaml")
    family = build_family(config)
    seed = config.evaluation.seed
    tasks = held_out_tasks(config, max(num_tasks, config.evaluation.tasks), seed)[:num_tasks]
    budget = -(-budget // settings.n_steps) * settings.n_steps  # whole rollouts
    meta = meta_returns(config, load_params(run_dir / PARAMS_FILE), tasks)
    eval_episodes = eval_episodes or config.evaluation.episodes_per_task or config.meta.episodes_per_task
    policy_kwargs = sb3_policy_kwargs(build_policy(config, family)) if net == "metarl" else {}
    print(f"{num_tasks} tasks x {len(seeds)} seeds, PPO for {budget:,} env steps each", flush=True)
    curves = {}
    for i, task in enumerate(tasks):
        for s in seeds:
            key = {"family": config.env.family, "env_kwargs": config.env.kwargs, "task": jsonable_task(task),
                   "ppo": dataclasses.asdict(settings), "net": net_text(policy_kwargs),
                   "budget": budget, "eval_episodes": eval_episodes, "seed": s}
            curves[(i, s)] = cached_ppo(cache, key,
                                        lambda task=task, s=s: train_ppo(family, task, settings, policy_kwargs, budget,
                                                                         eval_episodes, s))
            print(f"  task {i} seed {s}: PPO env steps to reach {meta.after[i]:.2f}: "
                  f"{steps_text(steps_to_reach(curves[(i, s)], meta.after[i]), budget)}", flush=True)
    return Comparison(config, run_dir, tasks, meta, curves, seeds, budget, settings, policy_kwargs, eval_episodes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory written by 'metarl train'")
    parser.add_argument("--tasks", type=int, default=10, help="the first N held-out tasks (default 10)")
    parser.add_argument("--budget", type=int, default=200_000, help="PPO env steps per task (default 200000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="PPO seeds (default 0)")
    parser.add_argument("--net", choices=["metarl", "sb3"], default="metarl",
                        help="PPO's MlpPolicy: the run policy's hidden sizes and activation, or SB3's 64x64 tanh")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="episodes per PPO evaluation (default: the run's evaluation.episodes_per_task)")
    for field in dataclasses.fields(PPOSettings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default,
                            help=f"PPO's {field.name} (default {field.default})")
    parser.add_argument("--page", default=None, help="page and plot name (default: compare-sb3-<run config name>)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "compare-sb3", help="PPO curves kept here")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.budget < 1 or (args.eval_episodes is not None and args.eval_episodes < 1):
        parser.error("--tasks, --budget and --eval-episodes must be >= 1")
    return args


def command_line(argv: list[str]) -> str:
    """The command as a user would type it again (paths as given)."""
    return " ".join(["python scripts/compare_sb3.py", *argv])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(1)
    run_dir = finished_run(args.run_dir)
    settings = PPOSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PPOSettings)})
    comparison = compare(run_dir, args.tasks, args.budget, args.seeds, settings, args.net, args.eval_episodes,
                         args.cache)
    page = args.page or f"compare-sb3-{comparison.config.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_page(comparison, args.out, page, command_line(argv)))


if __name__ == "__main__":
    main()
