"""What several test modules share: the checkout's paths, tiny configs, running the ``metarl`` command
and interrupting it, loading scripts, watching processes. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from metarl.experiment.config import validate

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
# Overrides that shrink a navigation config to a run of seconds.
TINY = ["train.iterations=2", "meta.batch_tasks=3", "meta.episodes_per_task=2", "evaluation.tasks=4",
        "evaluation.steps=2", "evaluation.episodes_per_task=2", "env.kwargs={horizon: 10}"]


def tiny(**sections):
    """A validated config of a few seconds' navigation run, with ``sections`` laid over it."""
    data = {"seed": 3, "meta": {"batch_tasks": 3, "episodes_per_task": 2, "inner_lr": 1e-3},
            "env": {"kwargs": {"horizon": 10}}, "train": {"iterations": 2}, "policy": {"hidden_sizes": [16]},
            # DiCE in summed units and Adam: the options the tests below set against
            "surrogate": {"kind": "dice", "discount_scores": True, "normalize_advantages": False,
                          "per_step_units": False}, "outer": {"kind": "adam"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return validate(data)


def checkout_env() -> dict[str, str]:
    """The environment for a subprocess that must import this checkout (whatever copy of metarl is installed)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def interrupt_training(args: list[str], run_dir: Path, *, after_records: int, sig: int, cwd: Path
                       ) -> tuple[int, str, str]:
    """Run ``python -m metarl train *args`` and send it ``sig`` once ``run_dir/metrics.jsonl`` holds
    ``after_records`` records (or it ends, or 120 s pass); return (returncode, stdout, stderr).

    A shell that starts the test run in the background makes its children ignore SIGINT; the child
    restores the default so that Python turns Ctrl-C into KeyboardInterrupt, as in a terminal. The
    child never outlives the call.
    """
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "metarl", "train", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=checkout_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None and (
                not metrics.exists() or len(metrics.read_text().splitlines()) < after_records):
            time.sleep(0.05)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr


def interrupt_long_run(tmp_path: Path, *overrides: str, after_records: int) -> tuple[Path, int, str, str]:
    """Start a tiny navigation run without end in ``tmp_path/run`` and Ctrl-C it once it has written
    ``after_records`` records; return (run_dir, returncode, stdout, stderr)."""
    import signal

    run_dir = tmp_path / "run"
    endless = [arg for arg in TINY if not arg.startswith("train.iterations")] + ["train.iterations=100000"]
    return run_dir, *interrupt_training(
        [str(ROOT / "configs/navigation-maml.yaml"), *endless, *overrides, f"run.dir={run_dir}", "--quiet"], run_dir,
        after_records=after_records, sig=signal.SIGINT, cwd=tmp_path)


def metarl(*args, cwd):
    """Run the ``metarl`` command of this checkout."""
    return subprocess.run([sys.executable, "-m", "metarl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=checkout_env())


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def still_running(pids, seconds: float = 10.0) -> list[int]:
    """The processes of ``pids`` still running after up to ``seconds`` (Ray stops actors asynchronously)."""
    end = time.monotonic() + seconds
    while any(running(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return [pid for pid in pids if running(pid)]


def processes_with_env(marker: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if running(pid)]
