"""The ``metarl`` command: ``train``, ``evaluate``, ``export``, ``plot`` and ``video``.

Each command imports what it needs when it runs: torch, Gymnasium and MuJoCo take seconds to load,
and ``metarl --help`` should not wait for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from metarl.signals import exit_status, signal_name, stop_on_signals


def _train(args: argparse.Namespace) -> None:
    from metarl.experiment.config import ConfigError, load_config
    from metarl.experiment.trainer import run_training

    if args.resume is not None:
        overrides = args.overrides
        if args.config is not None and "=" in args.config:  # the first override, taken for the config file
            overrides = [args.config, *overrides]
        elif args.config is not None:
            raise ConfigError("--resume continues a run with its own config.yaml: give no config file")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a run directory: config.yaml is missing")
        config = load_config(run_dir / "config.yaml", overrides)
    elif args.config is None:
        raise ConfigError("give a config file, or --resume RUN_DIR")
    elif Path(args.config).is_dir():
        hint = (f"; to continue the run in it: metarl train --resume {args.config}"
                if (Path(args.config) / "config.yaml").is_file() else "")
        raise ConfigError(f"{args.config!r} is a directory, not a config file{hint}")
    else:
        config = load_config(args.config, args.overrides)
    run_dir, result = run_training(config, progress=not args.quiet, resume=args.resume,
                                   on_run_dir=lambda path: print(f"run directory: {path}", flush=True))
    if any((run_dir / "wandb").glob("offline-run-*")):
        print(f"W&B run logged offline; upload it with: wandb sync {run_dir / 'wandb'}")
    if result is not None:
        print(f"\nheld-out adaptation of {config.name} ({result.describe()}):")
        print(result.table())


def finished_run(path: str | Path) -> Path:
    """``path`` as the directory of a finished run (``config.yaml`` and the final parameters);
    ``ConfigError`` otherwise."""
    from metarl.experiment.config import ConfigError
    from metarl.experiment.run_dir import PARAMS_FILE

    run_dir = Path(path)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    for name in ("config.yaml", PARAMS_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a finished run directory: {name} is missing")
    return run_dir


def _labels(run_dirs: list[Path]) -> list[str]:
    """Run directory names, made unique with their parents when two are alike."""
    names = [d.resolve().name for d in run_dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(run_dirs, names)]


def _evaluate(args: argparse.Namespace) -> None:
    from metarl.experiment.config import load_config
    from metarl.experiment.evaluation import LATEST_EVALUATION, evaluate, save_evaluation, side_by_side
    from metarl.experiment.run_dir import PARAMS_FILE, load_params

    run_dirs = [finished_run(path) for path in args.run_dirs]
    overrides = [f"evaluation.protocol={args.protocol}"] if args.protocol else []
    overrides += [f"evaluation.workers={args.workers}"] if args.workers is not None else []
    overrides += [f"evaluation.task_set={args.task_set}"] if args.task_set else []
    overrides += [f"evaluation.later_step_scale={args.later_step_scale}"] if args.later_step_scale is not None else []
    overrides += [f"evaluation.first_step_scale={args.first_step_scale}"] if args.first_step_scale is not None else []
    configs = [load_config(d / "config.yaml", overrides) for d in run_dirs]
    if args.workers is not None and any(c.evaluation.protocol != "workers" for c in configs):
        raise ValueError("--workers applies to the 'workers' protocol only: add --protocol workers")
    seed = args.seed
    if seed is None and len({c.evaluation.seed for c in configs}) > 1:
        seed = configs[0].evaluation.seed
        print(f"the runs' evaluation seeds differ; all are evaluated on the held-out tasks of seed {seed}")
    results = {}
    for label, run_dir, config in zip(_labels(run_dirs), run_dirs, configs):
        result = evaluate(config, load_params(run_dir / PARAMS_FILE), num_tasks=args.tasks, steps=args.steps, seed=seed,
                          progress=not args.quiet)
        saved = save_evaluation(result, run_dir)
        print(f"saved {saved} (and as {run_dir / LATEST_EVALUATION})")
        results[label] = result
    if len(results) == 1:
        result = next(iter(results.values()))
        print(f"held-out adaptation of {configs[0].name} ({result.describe()}):")
        print(result.table())
    else:
        described = {result.describe() for result in results.values()}
        how = described.pop() if len(described) == 1 else "; ".join(f"{k}: {r.describe()}" for k, r in results.items())
        print(f"held-out adaptation, mean return +/- standard error ({how}):")
        print(side_by_side(results))


def _export(args: argparse.Namespace) -> None:
    from metarl.experiment.config import load_yaml
    from metarl.integrations.sb3 import export_sb3  # Stable-Baselines3 is optional

    run_dir = finished_run(args.run_dir)
    task = None if args.task is None else load_yaml(args.task, f"--task {args.task!r}")
    path = export_sb3(run_dir, task, steps=args.steps, path=args.out, task_seed=args.task_seed, seed=args.seed)
    print(f"wrote {path}: SB3 PPO model of the run's policy after {args.steps} adaptation step(s)")


def run_names(run_dirs: list[Path]) -> list[str]:
    """Each run's ``name`` from its config.yaml, with its seed where names repeat, with its directory
    where those repeat too (a directory without a readable config is named by its path)."""
    from metarl.experiment.config import ConfigError, load_yaml

    def read(run_dir: Path) -> tuple[str, str]:
        try:
            config = load_yaml((run_dir / "config.yaml").read_text(), str(run_dir / "config.yaml"))
            return str(config["name"]), f"{config['name']} seed {config['seed']}"
        except (OSError, ConfigError, KeyError, TypeError):
            return str(run_dir), str(run_dir)

    names, seeded = zip(*map(read, run_dirs)) if run_dirs else ((), ())
    labels = [name if names.count(name) == 1 else with_seed for name, with_seed in zip(names, seeded)]
    return [label if labels.count(label) == 1 else f"{label} ({d})" for label, d in zip(labels, run_dirs)]


def _plot(args: argparse.Namespace) -> None:
    from metarl.experiment.config import ConfigError
    from metarl.experiment.evaluation import LATEST_EVALUATION, EvaluationResult
    from metarl.experiment.metrics import read_metrics
    from metarl.experiment.plotting import plot_adaptation, plot_training_curves

    if args.curves and args.paths:
        raise ConfigError("give --curves or --paths, not both")
    if args.paths:
        _plot_paths(args)
        return
    run_dirs = [Path(path) for path in args.run_dirs]
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    figure = "curves.png" if args.curves else "adaptation.png"
    if args.out is None and len(run_dirs) > 1:
        raise ConfigError(f"give --out FILE for a figure of {len(run_dirs)} runs (one run's goes to RUN_DIR/{figure})")
    out = args.out if args.out is not None else run_dirs[0] / figure
    labels = run_names(run_dirs)
    if args.curves:
        metrics = {}
        for label, run_dir in zip(labels, run_dirs):
            if not (run_dir / "metrics.jsonl").is_file():
                raise ConfigError(f"{str(run_dir)!r} has no metrics.jsonl: is it a run directory?")
            metrics[label] = read_metrics(run_dir / "metrics.jsonl", skip_damaged=True)  # a run may be writing it
        print(f"wrote {plot_training_curves(metrics, out, x=args.x, title=args.title)}")
        return
    results = {}
    for label, run_dir in zip(labels, run_dirs):
        path = run_dir / LATEST_EVALUATION
        if not path.is_file():
            raise ConfigError(f"{str(run_dir)!r} has no {LATEST_EVALUATION}: run 'metarl evaluate {run_dir}' first")
        results[label] = EvaluationResult.load(path)
    print(f"wrote {plot_adaptation(results, out, title=args.title)}")


def _plot_paths(args: argparse.Namespace) -> None:
    from metarl.experiment.config import ConfigError, load_config
    from metarl.experiment.evaluation import held_out_tasks
    from metarl.experiment.pictures import navigation_paths
    from metarl.experiment.plotting import plot_navigation_paths
    from metarl.experiment.run_dir import PARAMS_FILE, load_params

    if len(args.run_dirs) != 1:
        raise ConfigError("--paths draws one run")
    run_dir = finished_run(args.run_dirs[0])
    config = load_config(run_dir / "config.yaml")
    seed = config.evaluation.seed if args.seed is None else args.seed
    tasks = held_out_tasks(config, args.tasks, seed)
    paths = navigation_paths(config, load_params(run_dir / PARAMS_FILE), tasks, steps=args.steps, seed=seed)
    out = plot_navigation_paths(paths, args.out or run_dir / "paths.png", title=args.title or config.name)
    print(f"wrote {out}: {len(tasks)} held-out goals, {len(paths.positions[0][0])} episodes each before adaptation "
          f"and after 1..{args.steps} steps")


def _video(args: argparse.Namespace) -> None:
    from metarl.experiment.build import build_family
    from metarl.experiment.config import load_config, load_yaml
    from metarl.experiment.evaluation import check_task, draw_task
    from metarl.experiment.pictures import write_video
    from metarl.experiment.run_dir import PARAMS_FILE, load_params

    run_dir = finished_run(args.run_dir)
    config = load_config(run_dir / "config.yaml")
    family = build_family(config)
    given = None if args.task is None else load_yaml(args.task, f"--task {args.task!r}")
    task = check_task(family, draw_task(family, given, args.task_seed))
    seed = config.evaluation.seed if args.seed is None else args.seed
    out = write_video(config, load_params(run_dir / PARAMS_FILE), task, args.out or run_dir / "video.gif",
                      steps=args.steps, seed=seed)
    print(f"wrote {out}: the policy before adaptation and after 1..{args.steps} steps on task {task}")


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from metarl import __version__

    parser = argparse.ArgumentParser(prog="metarl",
                                     description="Meta-reinforcement learning with MAML, FO-MAML and HF-MAML.")
    parser.add_argument("--version", action="version", version=f"metarl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="meta-train as a config file says")
    train.add_argument("config", nargs="?", help="YAML config file, for example configs/navigation-maml.yaml")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides, for example meta.inner_lr=0.05")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the run in RUN_DIR from its newest checkpoint; train.iterations=N trains a "
                            "finished run further")
    train.set_defaults(run=_train)
    evaluation = commands.add_parser("evaluate", help="adapt trained runs to held-out tasks, side by side")
    evaluation.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by 'metarl train'")
    evaluation.add_argument("--tasks", type=int, default=None,
                            help="number of held-out tasks (default: the run config's evaluation.tasks)")
    evaluation.add_argument("--steps", type=int, default=None,
                            help="adaptation steps (default: the run config's evaluation.steps)")
    evaluation.add_argument("--seed", type=int, default=None,
                            help="seed of the held-out tasks (default: the run config's evaluation.seed)")
    evaluation.add_argument("--protocol", choices=["episodes", "steps", "workers"], default=None,
                            help="'episodes': independent episodes per task; 'steps': collected to a step budget as "
                                 "rllab's vectorised sampler collects (episodes under way dropped); 'workers': as its "
                                 "parallel sampler, which Finn et al.'s later test scripts run (episodes under way "
                                 "kept) (default: the run config's evaluation.protocol)")
    evaluation.add_argument("--workers", type=int, default=None, metavar="N",
                            help="the 'workers' protocol's parallel workers (default: the run config's "
                                 "evaluation.workers, 4)")
    evaluation.add_argument("--task-set", default=None, metavar="NAME",
                            help="evaluate on a fixed task set of the family instead of drawn tasks, e.g. navigation's "
                                 "'finn2017' (the 40 test goals of Finn et al.)")
    evaluation.add_argument("--later-step-scale", type=float, default=None, metavar="SCALE",
                            help="take the steps after the first at SCALE times the inner step (Finn et al.'s "
                                 "test: 0.5; default: the run config's evaluation.later_step_scale)")
    evaluation.add_argument("--first-step-scale", type=float, default=None, metavar="SCALE",
                            help="take the first step at SCALE times the inner step (Finn et al.'s test code from "
                                 "February to April 2017 took every step at 0.5; default: the run config's "
                                 "evaluation.first_step_scale, 1)")
    evaluation.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluation.set_defaults(run=_evaluate)
    export = commands.add_parser("export", help="adapt a trained run to one task and save its policy for another "
                                                 "library")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'metarl train'")
    task = export.add_mutually_exclusive_group(required=True)
    task.add_argument("--task", help="the task's parameters as a YAML or JSON mapping, e.g. '{goal: [0.3, -0.2]}'")
    task.add_argument("--task-seed", type=int, default=None, metavar="N",
                      help="draw the task from the run's family with seed N")
    export.add_argument("--steps", type=int, default=1,
                        help="adaptation steps, as 'metarl evaluate' takes them (default: 1; 0: the meta-parameters)")
    export.add_argument("--seed", type=int, default=None,
                        help="seed of the adaptation rollouts (default: the run config's evaluation.seed)")
    export.add_argument("--format", required=True, choices=["sb3"], help="sb3: a Stable-Baselines3 PPO model (.zip)")
    export.add_argument("--out", required=True, help="file to write, for example model.zip")
    export.set_defaults(run=_export)
    plot = commands.add_parser("plot", help="return against adaptation steps of evaluated runs, or their training "
                                             "curves (PNG)")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (holding evaluation.json, "
                                                                      "or metrics.jsonl with --curves)")
    plot.add_argument("--curves", action="store_true",
                      help="training curves from metrics.jsonl: returns before and after adaptation, the outer "
                           "step's KL and norm, the policy's std")
    plot.add_argument("--paths", action="store_true",
                      help="2D navigation: paths sampled before adaptation and after each step, for a few held-out "
                           "goals (default out: RUN_DIR/paths.png)")
    plot.add_argument("--tasks", type=_at_least(1), default=4, help="held-out goals drawn by --paths (default: 4)")
    plot.add_argument("--steps", type=_at_least(1), default=2, help="adaptation steps drawn by --paths (default: 2)")
    plot.add_argument("--seed", type=int, default=None,
                      help="seed of --paths' goals and rollouts (default: the run config's evaluation.seed)")
    plot.add_argument("--x", choices=["iteration", "env_steps"], default="iteration",
                      help="x axis of --curves (default: iteration)")
    plot.add_argument("--out", default=None,
                      help="PNG file to write (default for one run: RUN_DIR/adaptation.png, RUN_DIR/curves.png with "
                           "--curves; required for several)")
    plot.add_argument("--title", default=None, help="figure title")
    plot.set_defaults(run=_plot)
    video = commands.add_parser("video", help="a GIF of a trained run's policy on one task, before and after "
                                              "adaptation")
    video.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'metarl train'")
    video_task = video.add_mutually_exclusive_group(required=True)
    video_task.add_argument("--task", help="the task's parameters as a YAML or JSON mapping, e.g. '{direction: -1}'")
    video_task.add_argument("--task-seed", type=int, default=None, metavar="N",
                            help="draw the task from the run's family with seed N")
    video.add_argument("--steps", type=_at_least(1), default=1,
                       help="adaptation steps shown beside the policy before (default: 1)")
    video.add_argument("--seed", type=int, default=None,
                       help="seed of the adaptation rollouts and the episode shown (default: the run config's "
                            "evaluation.seed)")
    video.add_argument("--out", default=None, help="GIF file to write (default: RUN_DIR/video.gif)")
    video.set_defaults(run=_video)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (``train c.yaml --quiet seed=3``).
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "train" or any(text.startswith("-") for text in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:  # from here on, Ctrl-C or a stop signal is a message and an exit status, even while importing torch
        with stop_on_signals():
            return _run(args)
    except KeyboardInterrupt as interrupt:  # outside training (which saves and says more): nothing to save
        print(f"metarl: stopped by {signal_name(interrupt)}", file=sys.stderr)
        return exit_status(interrupt)


def _run(args: argparse.Namespace) -> int:
    """Run the command; a known kind of failure is a one-line message and exit status 2."""
    from metarl.experiment.config import ConfigError
    from metarl.experiment.run_dir import RunDirectoryInUse
    from metarl.experiment.trainer import Interrupted, NonFiniteError
    from metarl.rl.sampling import WorkerError

    try:
        args.run(args)
    except (ConfigError, NonFiniteError, ValueError, WorkerError, RunDirectoryInUse) as error:
        print(f"metarl: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"metarl: {error}", file=sys.stderr)
        return error.exit_status
    except OSError as error:  # run directory not creatable, disk full, ...
        detail = error.strerror or str(error)
        print(f"metarl: error: {detail}" + (f": {error.filename}" if error.filename else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
