"""Figures: mean held-out return against adaptation steps for several runs, with standard-error bands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.evaluation import EvaluationResult


def pyplot() -> Any:
    """matplotlib's pyplot with the file-only Agg back-end (imported on first use: only figures need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_adaptation(results: dict[str, EvaluationResult], path: str | Path, title: str | None = None) -> Path:
    """Draw every run's return after 0..K steps (mean +/- one standard error) into one PNG; a run
    evaluated without adaptation (one step count) is drawn as a dashed level across the axis."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4))
    all_steps = sorted({k for r in results.values() for k in r.steps})
    for label, result in results.items():
        steps, means, errors = result.steps, result.mean_return, result.stderr
        style = {"marker": "o"}
        if len(steps) == 1 and len(all_steps) > 1:  # no adaptation (an oracle): a level across the axis
            steps, means, errors = [all_steps[0], all_steps[-1]], means * 2, errors * 2
            style = {"linestyle": "--"}
        low = [m - s for m, s in zip(means, errors)]
        high = [m + s for m, s in zip(means, errors)]
        (line,) = axes.plot(steps, means, label=label, **style)
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    tasks = sorted({r.num_tasks for r in results.values()})
    axes.set_xlabel("adaptation steps")
    axes.set_ylabel(f"mean return ({'/'.join(map(str, tasks))} held-out tasks)")
    axes.set_xticks(all_steps)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".png")  # what matplotlib would write; say so
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
