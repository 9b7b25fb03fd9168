"""Fixtures shared by the test modules: this checkout's ``metarl`` command, tiny configs, interrupting a
training, and test-wide settings. Constants and pure functions that modules need at import time (paths,
override lists, loading a script, watching processes) are in ``tests/helpers.py``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metarl.experiment.config import Config, validate
from tests.helpers import ROOT, TINY, checkout_env


@pytest.fixture(autouse=True)
def _wandb_disabled_unless_tested(monkeypatch, request):
    """Training runs in tests log nothing to W&B, except in the tests of the W&B integration."""
    if not request.module.__name__.endswith("test_tracking"):
        monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def run_metarl() -> Callable[..., subprocess.CompletedProcess]:
    """``run_metarl(*args, cwd=...)`` runs this checkout's ``metarl`` command and returns its completed process."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "metarl", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=300, env=checkout_env())

    return run


@pytest.fixture(scope="session")
def tiny() -> Callable[..., Config]:
    """``tiny(**sections)``: a validated config of a few seconds' navigation run, ``sections`` laid over it."""

    def config(**sections: dict) -> Config:
        data = {"seed": 3, "meta": {"batch_tasks": 3, "episodes_per_task": 2, "inner_lr": 1e-3},
                "env": {"kwargs": {"horizon": 10}}, "train": {"iterations": 2}, "policy": {"hidden_sizes": [16]},
                # DiCE in summed units and Adam: the options the tests set against
                "surrogate": {"kind": "dice", "discount_scores": True, "normalize_advantages": False,
                              "per_step_units": False}, "outer": {"kind": "adam"}}
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        return validate(data)

    return config


@pytest.fixture
def interrupt_training() -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``interrupt_training(args, run_dir, *, after_records, sig, cwd)`` runs ``python -m metarl train *args``
    and sends it ``sig`` once ``run_dir/metrics.jsonl`` holds ``after_records`` records (or it ends, or 120 s
    pass); returns (returncode, stdout, stderr). No child outlives the test.

    A shell that starts the test run in the background makes its children ignore SIGINT; the child restores
    the default so that Python turns Ctrl-C into KeyboardInterrupt, as in a terminal.
    """
    children: list[subprocess.Popen] = []

    def interrupt(args: list[str], run_dir: Path, *, after_records: int, sig: int, cwd: Path) -> tuple[int, str, str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "metarl", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=checkout_env(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        children.append(process)
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None and (
                not metrics.exists() or len(metrics.read_text().splitlines()) < after_records):
            time.sleep(0.05)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
        return process.returncode, stdout, stderr

    yield interrupt
    for process in children:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def interrupt_long_run(interrupt_training, tmp_path) -> Callable[..., tuple[Path, int, str, str]]:
    """``interrupt_long_run(*overrides, after_records)`` starts a tiny navigation run without end in
    ``tmp_path/run`` and Ctrl-Cs it once it has written ``after_records`` records; returns
    (run_dir, returncode, stdout, stderr)."""

    def interrupt(*overrides: str, after_records: int) -> tuple[Path, int, str, str]:
        run_dir = tmp_path / "run"
        endless = [arg for arg in TINY if not arg.startswith("train.iterations")] + ["train.iterations=100000"]
        return run_dir, *interrupt_training(
            [str(ROOT / "configs/navigation-maml.yaml"), *endless, *overrides, f"run.dir={run_dir}", "--quiet"],
            run_dir, after_records=after_records, sig=signal.SIGINT, cwd=tmp_path)

    return interrupt
