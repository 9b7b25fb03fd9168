"""Training curves side by side: our runs' ``metrics.jsonl`` and rllab ``progress.csv`` files.

Finn et al.'s code (cbfinn/maml_rl) logs each meta-iteration to rllab's ``progress.csv``, with the
mean return of the episodes before adaptation (``0AverageReturn``) and after one step
(``1AverageReturn``). Our runs log the same two numbers as ``return_pre`` and ``return_post``. This
script prints, for each run, the mean over windows of iterations of the return after adaptation and
of the gain (after minus before), and with ``--out`` writes a markdown page with the table, the
command and, with ``--plot``, a figure::

    python scripts/training_curves.py runs/reproduce-halfcheetah-dir/maml-seed1 \\
        --progress "Finn et al.'s code=/path/to/progress.csv" --window 10 --out docs/results/page.md

A run is named by its directory (``--name`` overrides, in order); a progress file by the label before
``=``. Only iterations every run has reached are compared, unless ``--all`` is given.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl.experiment.metrics import format_table, read_metrics
from metarl.experiment.plotting import pyplot

Curve = tuple[list[float], list[float]]  # (return before adaptation, after), one entry per iteration


def run_curve(run_dir: Path) -> Curve:
    """``return_pre`` and ``return_post`` of a run's ``metrics.jsonl``, by iteration."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (not a run directory?)")
    # a resumed run may repeat an iteration: the last record counts
    records = {int(r["iteration"]): r for r in read_metrics(path, skip_damaged=True)}
    iterations = sorted(records)
    if iterations != list(range(len(iterations))):
        raise SystemExit(f"{path}: iterations are not 0..{len(iterations) - 1}")
    return [records[i]["return_pre"] for i in iterations], [records[i]["return_post"] for i in iterations]


def progress_curve(path: Path) -> Curve:
    """``0AverageReturn`` and ``1AverageReturn`` of an rllab ``progress.csv``, one row per iteration."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"0AverageReturn", "1AverageReturn"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{path}: no column {', '.join(sorted(missing))} (not a MAML progress.csv?)")
    return [float(r["0AverageReturn"]) for r in rows], [float(r["1AverageReturn"]) for r in rows]


def window_means(values: list[float], window: int, length: int) -> list[float]:
    """Means of ``values[:length]`` over consecutive windows of ``window`` iterations (the last may be short)."""
    values = values[:length]
    return [sum(values[i:i + window]) / len(values[i:i + window]) for i in range(0, len(values), window)]


def table(curves: dict[str, Curve], window: int, length: int) -> str:
    """Markdown: one row per window, the return after adaptation and the gain of every curve."""
    header = ["iterations"] + [f"{name}: {what}" for name in curves for what in ("after 1 step", "gain")]
    columns = []
    for pre, post in curves.values():
        columns.append(window_means(post, window, length))
        columns.append(window_means([b - a for a, b in zip(pre, post)], window, length))
    rows = [[f"{start}-{min(start + window, length) - 1}"]
            + [f"{column[k]:.1f}" if k < len(column) else "" for column in columns]
            for k, start in enumerate(range(0, length, window))]
    return format_table(header, rows, markdown=True)


def plot(curves: dict[str, Curve], length: int, out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (_, post) in curves.items():
        ax.plot(range(min(length, len(post))), post[:length], label=name)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean training return after one step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def source_line(label: str, path: Path) -> str:
    """A page's line naming one rllab log, and the README beside it that says how it was made, if any."""
    readme = path.parent / "README.md"
    return f"* {label}: rllab log `{path}`" + (f" (how it was made: `{readme}`)" if readme.is_file() else "") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="*", help="our run directories")
    parser.add_argument("--name", nargs="+", default=[], help="names of the runs, in order (default: directory)")
    parser.add_argument("--progress", nargs="+", default=[], metavar="LABEL=PATH",
                        help="rllab progress.csv files, each with its label")
    parser.add_argument("--window", type=int, default=10, help="iterations per row")
    parser.add_argument("--all", action="store_true", help="every iteration of the longest curve, not the shortest")
    parser.add_argument("--out", type=Path, default=None, help="write a markdown page here")
    parser.add_argument("--plot", action="store_true", help="with --out: also a figure beside the page")
    parser.add_argument("--title", default="Training curves", help="the page's heading")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be at least 1")
    if len(args.name) > len(args.runs):
        parser.error(f"{len(args.name)} names for {len(args.runs)} runs")
    curves: dict[str, Curve] = {}
    for k, run in enumerate(args.runs):
        curves[args.name[k] if k < len(args.name) else run.name] = run_curve(run)
    progress = [item.partition("=") for item in args.progress]
    for item, (label, sep, path) in zip(args.progress, progress):
        if not sep or not label or not path:
            parser.error(f"--progress wants LABEL=PATH, got {item!r}")
        curves[label] = progress_curve(Path(path))
    if not curves:
        parser.error("give at least one run directory or --progress file")
    lengths = [len(post) for _, post in curves.values()]
    length = max(lengths) if args.all else min(lengths)
    if length == 0:
        parser.error("a curve has no iterations")
    text = table(curves, args.window, length)
    print(text)
    if args.out is not None:
        command = shlex.join(["python", "scripts/training_curves.py", *(argv if argv is not None else sys.argv[1:])])
        figure = ""
        if args.plot:
            image = args.out.with_suffix(".png")
            plot(curves, length, image)
            figure = f"\n![training curves]({image.name})\n"
        sources = "".join(source_line(label, Path(path)) for label, _, path in progress)
        sources = "\n" + sources if sources else ""
        args.out.write_text(
            f"# {args.title}\n\nWritten by `{command}` (`scripts/training_curves.py`): the mean training return "
            f"after one adaptation step and the mean gain (after minus before) over windows of {args.window} "
            f"meta-iterations, iterations 0-{length - 1}.\n{sources}\n{text}\n{figure}", encoding="utf-8")


if __name__ == "__main__":
    main()
