"""Figures: mean held-out return against adaptation steps for several runs, with standard-error
bands, and training curves (returns, trust-region step, policy std) from ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path
import math
from typing import Any, Sequence

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
