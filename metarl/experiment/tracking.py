"""Experiment tracking with Weights & Biases (the ``wandb`` package), or nothing at all.

The trainer talks to a :class:`Tracker`; :func:`make_tracker` returns a W&B one or, with
``mode="disabled"``, a :class:`NullTracker` that writes nothing and never imports ``wandb``.

Where the data goes. ``wandb.init(dir=run_dir)`` puts the W&B run under the run directory:
``<run_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`` in offline mode (``run-<time>-<id>``
online), a binary transaction log that ``wandb sync <run_dir>/wandb`` uploads later. The logged
media (evaluation table, plot) land in that run's ``files/media/``. Two things live outside the
run directory, in W&B's own user directories: the staging copy of a logged artifact (the
checkpoint, kept until it is synced) under ``WANDB_DATA_DIR`` (default ``~/.local/share/wandb``)
and the service's debug logs under ``WANDB_CACHE_DIR`` (default ``~/.cache/wandb``). Offline
runs of wandb 0.31 write no ``files/config.yaml`` or ``files/wandb-summary.json``: everything is
in the ``.wandb`` log, which :func:`read_offline_run` reads back.

W&B's output is kept quiet (``silent``, console capture off: the progress bars are not copied
into the run). Its service (``wandb-core``, with ``wandb-symon`` for system metrics) starts with
the run, in about a second, and :meth:`WandbTracker.finish` shuts it down again. The service
buffers the log and flushes it every ``x_transaction_log_flush_interval`` seconds (15 s by
default, 2 s here), and a step's history row is only written once a later step is logged (or the
run finishes), so a process killed with SIGKILL loses its last iteration and the last couple of
seconds from the W&B log; resuming logs those iterations again (see :func:`make_tracker`).
"""

from __future__ import annotations

import json
import math
import netrc
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlparse

from metarl.experiment.config import WandbConfig

if TYPE_CHECKING:
    from metarl.experiment.evaluation import EvaluationResult

MODES = ("auto", "offline", "online", "disabled")
_ENV_MODES = {"offline": "offline", "dryrun": "offline", "online": "online", "run": "online", "shared": "online",
              "disabled": "disabled"}
FLUSH_INTERVAL_S = 2.0
EVALUATION_COLUMNS = ("steps", "mean_return", "stderr")
_NONFINITE_STRINGS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_Self = TypeVar("_Self", bound="_ContextManager")


class TrackingError(ValueError):
    """W&B cannot be used as configured; the message says what to do. A ``ValueError``, so the
    command line reports it like a configuration problem."""


class Tracker(Protocol):
    """What the trainer reports to. ``run_id`` is the W&B run id (``None`` when disabled), to be
    stored in checkpoints and passed back as ``resume_id``; ``local_dir`` is the W&B run's
    local directory (``None`` when disabled), the thing to ``wandb sync``."""

    run_id: str | None
    local_dir: Path | None

    def log_metrics(self, record: dict[str, Any]) -> None:
        """One meta-iteration's record; ``record["iteration"]`` is the step."""

    def log_evaluation(self, result: EvaluationResult, plot_path: Path | None = None) -> None:
        """The held-out evaluation: table, summary entries and the adaptation plot."""

    def log_checkpoint(self, path: Path, iteration: int) -> None:
        """A checkpoint file as an artifact of type ``model``."""

    def log_figure(self, key: str, path: Path) -> None:
        """A PNG file as an image under ``key``."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (idempotent)."""


class _ContextManager:
    """``with make_tracker(...) as tracker:`` finishes the run, with exit code 1 on an exception."""

    def finish(self, exit_code: int = 0) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.finish(0 if exc_type is None else 1)


class NullTracker(_ContextManager):
    """Tracking disabled: every call does nothing, nothing is written anywhere."""

    run_id: str | None = None
    local_dir: Path | None = None

    def log_metrics(self, record: dict[str, Any]) -> None:
        pass

    def log_evaluation(self, result: EvaluationResult, plot_path: Path | None = None) -> None:
        pass

    def log_checkpoint(self, path: Path, iteration: int) -> None:
        pass

    def log_figure(self, key: str, path: Path) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(_ContextManager):
    """A live W&B run. Records whose step is below ``first_step`` are not logged again (they are
    already in the run: see :func:`make_tracker` on resuming)."""

    def __init__(self, run: Any, wandb: ModuleType, first_step: int = 0) -> None:
        self._run = run
        self._wandb = wandb
        self._finished = False
        self.first_step = first_step
        self._last_step: int | None = None
        self.run_id: str | None = run.id
        self.local_dir: Path | None = Path(run.settings.sync_dir)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Every key of ``record`` at step ``record["iteration"]``; "nan"/"inf" strings become floats."""
        step = int(record["iteration"])
        if step >= self.first_step:
            self._run.log({key: loggable(value) for key, value in record.items()}, step=step)
            self._last_step = step

    def log_evaluation(self, result: EvaluationResult, plot_path: Path | None = None) -> None:
        """``evaluation/table`` (a ``wandb.Table``) and ``evaluation/plot`` (a ``wandb.Image``) at
        the step last logged by this tracker (else ``first_step``, a step not yet in the run), and
        :func:`evaluation_summary` in the run summary."""
        rows = [[int(k), float(m), float(s)] for k, m, s in zip(result.steps, result.mean_return, result.stderr)]
        data: dict[str, Any] = {"evaluation/table": self._wandb.Table(columns=list(EVALUATION_COLUMNS), data=rows)}
        if plot_path is not None:
            data["evaluation/plot"] = self._wandb.Image(str(plot_path))
        self._run.log(data, step=self.first_step if self._last_step is None else self._last_step)
        self._run.summary.update(evaluation_summary(result))

    def log_checkpoint(self, path: Path, iteration: int) -> None:
        """``path`` (a file or a directory) as version ``latest`` / ``iteration-<n>`` of the
        ``model`` artifact ``checkpoint-<run id>``, with the iteration in its metadata."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        artifact = self._wandb.Artifact(f"checkpoint-{self.run_id}", type="model", metadata={"iteration": iteration})
        if path.is_dir():
            artifact.add_dir(str(path), name=path.name)
        else:
            artifact.add_file(str(path), name=path.name)
        self._run.log_artifact(artifact, aliases=["latest", f"iteration-{iteration}"])

    def log_figure(self, key: str, path: Path) -> None:
        """``path`` as a ``wandb.Image`` under ``key``, at the step last logged by this tracker."""
        self._run.log({key: self._wandb.Image(str(path))},
                      step=self.first_step if self._last_step is None else self._last_step)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run with ``exit_code`` and, unless another W&B run is active in this
        process, shut the W&B service down (no background process is left)."""
        if self._finished:
            return
        self._finished = True
        try:
            self._run.finish(exit_code=exit_code)
        finally:
            if self._wandb.run is None:
                self._wandb.teardown(exit_code)


def loggable(value: Any) -> Any:
    """``value`` as W&B should log it: non-finite strings ("nan", "inf", as ``metrics.jsonl``
    writes them) as floats, numpy / torch scalars as Python numbers, dicts converted throughout."""
    if isinstance(value, str):
        return float(value) if value.strip().lower() in _NONFINITE_STRINGS else value
    if isinstance(value, dict):
        return {key: loggable(item) for key, item in value.items()}
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def evaluation_summary(result: EvaluationResult) -> dict[str, Any]:
    """Summary entries of an evaluation: ``evaluation/return_step_<k>`` and
    ``evaluation/stderr_step_<k>`` for every number of adaptation steps k (``return_step_1`` is
    the return after one step), and the evaluation's task count, seed and episodes per task."""
    summary: dict[str, Any] = {}
    for k, mean, stderr in zip(result.steps, result.mean_return, result.stderr):
        summary[f"evaluation/return_step_{k}"] = float(mean)
        summary[f"evaluation/stderr_step_{k}"] = float(stderr)
    summary["evaluation/num_tasks"] = result.num_tasks
    summary["evaluation/seed"] = result.seed
    summary["evaluation/episodes_per_task"] = result.episodes_per_task
    return summary


def make_tracker(settings: WandbConfig, run_dir: Path, config: dict[str, Any],
                 resume_id: str | None = None) -> Tracker:
    """A tracker for the run in ``run_dir`` with ``config`` (plain data) as the W&B run config.

    ``mode="auto"`` is settled by :func:`resolve_mode` first.
    ``mode="disabled"``: a :class:`NullTracker` (``wandb`` is not imported). Otherwise a W&B run
    under ``run_dir``; :class:`TrackingError` if ``wandb`` is missing or the run cannot start
    (online mode without ``wandb login``).

    Resuming (``resume_id`` given): ``wandb.init(id=resume_id, resume="allow")``, so the run keeps
    its id. Online, W&B continues the run on the server. Offline (checked with wandb 0.31) there
    is no server to ask: the run is *not* marked resumed, and a new directory
    ``offline-run-<time>-<id>`` (suffixed ``-1``, ``-2``, ... within the same second) is written
    beside the earlier ones, each holding one segment of the run. ``wandb sync <run_dir>/wandb``
    uploads all of them: files of the same run id are synced one after the other in order of
    start time into that one run (``wandb sync --help`` of wandb 0.31 says so for resumed runs;
    not exercised here, as there is no network). Iterations already in the run are not logged
    again, in either mode: W&B itself drops steps below the run's current step (online), and
    offline the steps in the earlier segments' logs are read back, so the segments never hold the
    same step twice (``WandbTracker.first_step``). Sampling is deterministic (with every sampler
    back-end), so the re-run iterations have the same values anyway.
    """
    if settings.mode not in MODES:
        raise TrackingError(f"logging.wandb.mode = {settings.mode!r}: must be one of {', '.join(MODES)}")
    mode = resolve_mode(settings.mode)
    if mode == "disabled":
        return NullTracker()
    wandb = _import_wandb()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # W&B warns about a missing git root otherwise
    try:
        run = wandb.init(**_init_arguments(settings, mode, run_dir, config, resume_id), settings=_wandb_settings(wandb))
    except wandb.errors.Error as error:
        if wandb.run is None:
            wandb.teardown(1)
        raise TrackingError(
            f"W&B could not start the run: {error} (run `wandb login`, or set logging.wandb.mode=offline "
            "to log locally, or logging.wandb.mode=disabled)"
        ) from error
    first_step = _next_unlogged_step(run, run_dir) if resume_id else 0
    return WandbTracker(run, wandb, first_step)


def resolve_mode(mode: str, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` made concrete: ``WANDB_MODE`` if set (``dryrun`` is ``offline``), else ``online``
    when an API key is configured (``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes for
    ``WANDB_BASE_URL``'s host), else ``offline``. Any other mode is returned as it is."""
    if mode != "auto":
        return mode
    environ = os.environ if environ is None else environ
    from_environment = _ENV_MODES.get(environ.get("WANDB_MODE", "").strip().lower())
    if from_environment:
        return from_environment
    return "online" if _api_key_configured(environ) else "offline"


def _api_key_configured(environ: Mapping[str, str]) -> bool:
    if environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    path = Path(environ["NETRC"]) if environ.get("NETRC") else Path(environ.get("HOME") or Path.home()) / ".netrc"
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _import_wandb() -> ModuleType:
    try:
        import wandb
    except ImportError as error:
        raise TrackingError(
            "W&B logging needs the wandb package: pip install wandb, or set logging.wandb.mode=disabled"
        ) from error
    return wandb


def _init_arguments(settings: WandbConfig, mode: str, run_dir: Path, config: dict[str, Any],
                    resume_id: str | None) -> dict[str, Any]:
    arguments: dict[str, Any] = dict(
        project=settings.project, entity=settings.entity, group=settings.group, tags=list(settings.tags) or None,
        name=settings.name, dir=str(run_dir), mode=mode, config=config,
    )
    if resume_id:
        arguments.update(id=resume_id, resume="allow")
    return arguments


def _wandb_settings(wandb: ModuleType) -> Any:
    """Quiet: no console output of W&B's own, no capture of ours; frequent log flushes."""
    options: dict[str, Any] = {"silent": True, "console": "off"}
    if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):
        options["x_transaction_log_flush_interval"] = FLUSH_INTERVAL_S
    return wandb.Settings(**options)


def _next_unlogged_step(run: Any, run_dir: Path) -> int:
    """The first step not yet in the resumed run: W&B's own next step (from the server, online)
    or one past the last step in this run's earlier local logs, whichever is larger."""
    current = Path(run.settings.sync_file).resolve()
    step = int(run.step or 0)
    for path in _run_logs(run_dir / "wandb", run.id):
        if path != current:
            steps = [r.history.step.num for r in read_records(path) if r.WhichOneof("record_type") == "history"]
            step = max([step, *(s + 1 for s in steps)])
    return step


# --- Reading W&B's local transaction logs back -------------------------------------------

_BLOCK = 32 * 1024
_FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32 of type byte + data, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` messages of a ``.wandb`` transaction log, in order.

    The format is LevelDB's log format (32 KiB blocks of CRC-checked chunks) behind a 7-byte
    header, as W&B writes it; wandb 0.31 has no Python reader of its own (``wandb-core leet
    inspect`` is the Go one). A truncated or corrupt tail (a killed process) ends the records."""
    from wandb.proto import wandb_internal_pb2

    for payload in _payloads(Path(path).read_bytes(), str(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _payloads(data: bytes, name: str) -> Iterator[bytes]:
    ident, magic, version = _FILE_HEADER.unpack_from(data) if len(data) >= _FILE_HEADER.size else (b"", 0, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{name!r} is not a W&B transaction log (version 0)")
    position, pending = _FILE_HEADER.size, b""
    while position + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - position % _BLOCK
        if room < _CHUNK_HEADER.size:  # block trailer
            position += room
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        chunk = data[position + _CHUNK_HEADER.size:position + _CHUNK_HEADER.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        position += _CHUNK_HEADER.size + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
        if kind in (_FULL, _LAST):
            yield pending


def _run_logs(wandb_dir: Path, run_id: str | None = None) -> list[Path]:
    """The ``run-<id>.wandb`` files under ``wandb_dir`` (each once, ``latest-run`` not repeated)."""
    pattern = f"*/run-{run_id}.wandb" if run_id else "*/run-*.wandb"
    return sorted({path.resolve() for path in Path(wandb_dir).glob(pattern)})


@dataclass
class OfflineRun:
    """A W&B run read back from its local logs: all its segments, oldest first, folded the way
    ``wandb sync`` replays them. Nested keys come back as nested dicts; W&B's own ``_wandb``
    entries are left out of ``config`` and ``summary``."""

    run_id: str
    files: list[Path]
    project: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def metric(self, key: str) -> dict[int, Any]:
        """``{step: value}`` of one history key."""
        return {row["_step"]: row[key] for row in self.history if key in row}


def read_offline_run(run_dir: str | Path, run_id: str | None = None) -> OfflineRun:
    """The W&B run logged under ``run_dir`` (the directory given to :func:`make_tracker`);
    ``run_id`` may be left out when there is only one."""
    logs = _run_logs(Path(run_dir) / "wandb", run_id)
    ids = sorted({path.name[len("run-"):-len(".wandb")] for path in logs})
    if len(ids) != 1:
        raise ValueError(f"{str(run_dir)!r} holds {len(ids)} W&B runs {ids}; give run_id")
    segments = [(list(read_records(path)), path) for path in logs]
    segments.sort(key=lambda segment: (_start_time(segment[0]), str(segment[1])))
    run = OfflineRun(run_id=ids[0], files=[path for _, path in segments])
    for records, _ in segments:
        for record in records:
            _fold(run, record)
    for section in (run.config, run.summary):
        section.pop("_wandb", None)
    return run


def _start_time(records: list[Any]) -> float:
    for record in records:
        if record.WhichOneof("record_type") == "run":
            return record.run.start_time.seconds + record.run.start_time.nanos * 1e-9
    return math.inf


def _fold(run: OfflineRun, record: Any) -> None:
    kind = record.WhichOneof("record_type")
    if kind == "run":
        r = record.run
        run.project, run.name, run.group, run.tags = r.project, r.display_name, r.run_group, list(r.tags)
        _update(run.config, r.config.update, r.config.remove)
    elif kind == "config":
        _update(run.config, record.config.update, record.config.remove)
    elif kind == "summary":
        _update(run.summary, record.summary.update, record.summary.remove)
    elif kind == "history":
        row: dict[str, Any] = {}
        _update(row, record.history.item, [])
        run.history.append(row)
    elif kind == "artifact":
        a = record.artifact
        run.artifacts.append({"name": a.name, "type": a.type, "aliases": sorted(a.aliases),
                              "metadata": json.loads(a.metadata or "{}"),
                              "files": [entry.path for entry in a.manifest.contents]})
    elif kind == "exit":
        run.exit_code = record.exit.exit_code


def _update(target: dict[str, Any], items: Any, removals: Any) -> None:
    """Apply W&B's ``key``/``nested_key`` + ``value_json`` items to ``target``."""
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)
    for item in removals:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            node = node.get(key, {})
        node.pop(last, None)
