"""The ``metarl`` command: ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarl.config import ConfigError, load_config
from metarl.evaluation import evaluate
from metarl.trainer import PARAMS_FILE, Interrupted, NonFiniteError, load_params, run_training


def _train(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.overrides)
    run_dir, result = run_training(config, progress=not args.quiet)
    print(f"run directory: {run_dir}")
    if result is not None:
        print(f"\nheld-out adaptation ({result.num_tasks} tasks, {config.name}):")
        print(result.table())


def _evaluate(args: argparse.Namespace) -> None:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    for name in ("config.yaml", PARAMS_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a finished run directory: {name} is missing")
    config = load_config(run_dir / "config.yaml")
    result = evaluate(config, load_params(run_dir / PARAMS_FILE), num_tasks=args.tasks, steps=args.steps,
                      seed=args.seed)
    result.save(run_dir / "evaluation.json")
    print(f"held-out adaptation ({result.num_tasks} tasks, {config.name}):")
    print(result.table())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-reinforcement learning with MAML, FO-MAML and HF-MAML.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="meta-train as a config file says")
    train.add_argument("config", help="YAML config file, for example configs/navigation-maml.yaml")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides, for example meta.inner_lr=0.05")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)
    evaluation = commands.add_parser("evaluate", help="adapt a trained run to held-out tasks")
    evaluation.add_argument("run_dir", help="a run directory written by 'metarl train'")
    evaluation.add_argument("--tasks", type=int, default=None, help="number of held-out tasks (default: the run config's evaluation.tasks)")
    evaluation.add_argument("--steps", type=int, default=None, help="adaptation steps (default: the run config's evaluation.steps)")
    evaluation.add_argument("--seed", type=int, default=None, help="seed of the held-out tasks (default: the run config's evaluation.seed)")
    evaluation.set_defaults(run=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (``train c.yaml --quiet seed=3``).
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "train" or any(text.startswith("-") for text in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        args.run(args)
    except (ConfigError, NonFiniteError, ValueError) as error:
        print(f"metarl: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"metarl: {error}", file=sys.stderr)
        return 130
    except OSError as error:  # run directory not creatable, disk full, ...
        detail = f"{error.strerror}: {error.filename}" if error.strerror else str(error)
        print(f"metarl: error: {detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
