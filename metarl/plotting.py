"""Figures: mean held-out return against adaptation steps for several runs, with standard-error bands."""

from __future__ import annotations

from pathlib import Path

from metarl.evaluation import EvaluationResult


def plot_adaptation(results: dict[str, EvaluationResult], path: str | Path, title: str | None = None) -> Path:
    """Draw every run's return after 0..K steps (mean +/- one standard error) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 4))
    for label, result in results.items():
        low = [m - s for m, s in zip(result.mean_return, result.stderr)]
        high = [m + s for m, s in zip(result.mean_return, result.stderr)]
        (line,) = axes.plot(result.steps, result.mean_return, marker="o", label=label)
        axes.fill_between(result.steps, low, high, color=line.get_color(), alpha=0.2)
    tasks = sorted({r.num_tasks for r in results.values()})
    axes.set_xlabel("adaptation steps")
    axes.set_ylabel(f"mean return ({'/'.join(map(str, tasks))} held-out tasks)")
    axes.set_xticks(sorted({k for r in results.values() for k in r.steps}))
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
