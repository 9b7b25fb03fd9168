"""Constants and pure functions several test modules need at import time or inside assertions: the
checkout's paths, the tiny-run overrides, a subprocess environment, loading a script, comparing metrics,
watching processes. What holds a test's state (running or interrupting the ``metarl`` command, tiny
configs) is a fixture in ``conftest.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
# Overrides that shrink a navigation config to a run of seconds.
TINY = ["train.iterations=2", "meta.batch_tasks=3", "meta.episodes_per_task=2", "evaluation.tasks=4",
        "evaluation.steps=2", "evaluation.episodes_per_task=2", "env.kwargs={horizon: 10}"]


def checkout_env() -> dict[str, str]:
    """The environment for a subprocess that must import this checkout (whatever copy of metarl is installed)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def without_times(records: list[dict]) -> list[dict]:
    """Metrics records without their wall-clock fields, to compare two runs."""
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


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
