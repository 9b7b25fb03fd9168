"""Figures: mean held-out return against adaptation steps for several runs, with standard-error
bands, and training curves (returns, trust-region step, policy std) from ``metrics.jsonl``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarl.experiment.evaluation import EvaluationResult


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
    return _save(figure, path)


def _save(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` as a PNG and close it; returns the file written (``.png`` added when ``path`` has no suffix)."""
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".png")  # what matplotlib would write; say so
    figure.savefig(path, dpi=120)
    pyplot().close(figure)
    return path


# Panels of the training curves: (title, metrics.jsonl keys drawn, solid then dashed).
CURVE_PANELS = (
    ("mean return (solid: before adaptation, dashed: after)", ("return_pre", "return_post")),
    ("KL of the outer step", ("kl",)),
    ("norm of the outer step", ("step_norm",)),
    ("policy std (mean over action dimensions)", ("policy_std",)),
)


def _series(records: Sequence[dict[str, Any]], x: str, key: str) -> tuple[list[float], list[float]]:
    """The finite values of ``key`` against ``x`` (NaN, Inf, "nan" strings and missing keys left out)."""
    points = [(float(r[x]), float(r[key])) for r in records if isinstance(r.get(key), (int, float))
              and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(metrics: dict[str, Sequence[dict[str, Any]]], path: str | Path, x: str = "iteration",
                         title: str | None = None) -> Path:
    """Draw every run's training curves from its ``metrics.jsonl`` records, one panel per entry of
    :data:`CURVE_PANELS` that some run logged, against ``x`` (``"iteration"`` or ``"env_steps"``)."""
    panels = [(name, keys) for name, keys in CURVE_PANELS
              if any(_series(records, x, keys[0])[0] for records in metrics.values())]
    if not panels:
        raise ValueError(f"no run has training metrics to draw (runs: {', '.join(metrics)})")
    plt = pyplot()
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, keys) in zip(axes.flat, panels):
        for i, (label, records) in enumerate(metrics.items()):
            for key, style in zip(keys, ("-", "--")):
                xs, ys = _series(records, x, key)
                ax.plot(xs, ys, style, color=colors[i % len(colors)], label=label if key == keys[0] else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("meta-iteration" if x == "iteration" else "environment steps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_navigation_paths(paths: Any, path: str | Path, title: str | None = None) -> Path:
    """One panel per goal of :class:`metarl.experiment.pictures.NavigationPaths`: the paths sampled before
    adaptation and after each step (colour by step), the goal (star) and the start (the origin)."""
    plt = pyplot()
    tasks, steps = len(paths.goals), len(paths.positions)
    columns = min(4, tasks)
    rows = -(-tasks // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.5), squeeze=False)
    colors = plt.get_cmap("viridis")([k / max(1, steps - 1) for k in range(steps)])
    for i, ax in enumerate(axes.flat):
        if i >= tasks:
            ax.set_visible(False)
            continue
        for k in range(steps):
            for j, points in enumerate(paths.positions[k][i]):
                label = ("before adaptation" if k == 0 else f"after {k} step{'s' * (k > 1)}") if j == 0 else None
                ax.plot(points[:, 0], points[:, 1], color=colors[k], lw=1.2, alpha=0.8, label=label)
        ax.plot(*paths.goals[i], marker="*", color="tab:red", markersize=14, linestyle="none")
        ax.plot(0, 0, marker="o", color="black", markersize=4)
        ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), aspect="equal", xticks=[-0.5, 0, 0.5], yticks=[-0.5, 0, 0.5])
        ax.set_title(f"goal ({paths.goals[i][0]:.2f}, {paths.goals[i][1]:.2f})", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(steps, 4), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.5 / (3.2 * rows + 0.5), 1, 1))
    return _save(figure, path)
