"""The ``subprocess`` back-end: a pool of worker processes on this machine.

Workers are started with the standard library's ``multiprocessing``, by the ``forkserver`` method
(``spawn`` where there is none), never by a plain ``fork``: a forked copy of a process whose torch
has started its thread pool can deadlock. The fork server imports this module (and so torch) once;
a worker forked from it then only builds its family and policy. Each worker talks to the main
process over its own pipe: a job in, the job's arrays (or the exception it raised) out. A worker
ignores Ctrl-C (the main process stops it) and exits when told to or when the main process is gone.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from metarl.rl.policies import Policy
from metarl.rl.sampling.pool import Fault, WorkerPool, WorkerPoolSampler, check_pool_settings
from metarl.rl.sampling.shards import ShardRunner, WorkerSpec
from metarl.signals import STOP_SIGNALS

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
STOP_GRACE_S = 1.0  # an idle worker told to stop is killed if it has not exited after this long


def _worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """A worker's life: build, report ready (its pid), run jobs until told to stop or orphaned."""
    for signum in (signal.SIGINT, *STOP_SIGNALS):  # the main process stops its workers itself
        signal.signal(signum, signal.SIG_IGN)
    try:
        runner = ShardRunner(spec)
    except Exception:
        conn.send(("error", _exception_report()))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if job is None:
            return
        try:
            reply = ("done", runner.run(job))
        except Exception:
            reply = ("error", _exception_report())
        try:
            conn.send(reply)
        except OSError:
            return


def _exception_report() -> tuple[str, str]:
    """The exception being handled: its one-line summary and its traceback."""
    error = sys.exc_info()[1]
    assert error is not None
    return traceback.format_exception_only(error)[-1].strip(), traceback.format_exc()


def exit_description(exitcode: int | None) -> str:
    """How a process ended, from its exit code."""
    if exitcode is None:
        return "closed its connection"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    busy: bool = True  # starting, or running a job


class ProcessPool(WorkerPool):
    """Worker processes started by ``multiprocessing`` (see the module docstring)."""

    kind = "subprocess"

    def __init__(self, spec: WorkerSpec, size: int) -> None:
        super().__init__(spec, size)
        self._context = multiprocessing.get_context(START_METHOD)
        if START_METHOD == "forkserver":
            self._context.set_forkserver_preload([__name__])
        self._workers: list[_Worker | None] = [None] * size

    def launch(self, index: int) -> None:
        conn, child_conn = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child_conn, self.spec),
                                        name=f"metarl-sampler-{index}", daemon=True)
        process.start()
        child_conn.close()  # the worker holds the only other end: when it dies, the pipe ends
        self._workers[index] = _Worker(process, conn)
        self.pids[index] = process.pid

    def submit(self, index: int, job: Any) -> None:
        worker = self._worker(index)
        worker.busy = True
        try:
            worker.conn.send(job)
        except OSError:
            pass  # it died: wait() sees its sentinel and reports how it ended

    def wait(self, indices: Sequence[int], timeout: float) -> dict[int, Any | Fault]:
        handles: dict[Any, int] = {}
        for index in indices:
            worker = self._worker(index)
            handles[worker.conn] = handles[worker.process.sentinel] = index
        replies: dict[int, Any | Fault] = {}
        for ready in multiprocessing.connection.wait(list(handles), timeout):
            index = handles[ready]
            if index not in replies:
                replies[index] = self._receive(index)
        return replies

    def _receive(self, index: int) -> Any | Fault:
        worker = self._worker(index)
        worker.busy = False
        if worker.conn.poll():
            try:
                status, payload = worker.conn.recv()
            except (EOFError, OSError):  # it died, possibly in the middle of a reply
                pass
            else:
                return Fault(f"raised {payload[0]}", retry=False, detail=payload[1]) if status == "error" else payload
        worker.process.join(STOP_GRACE_S)
        return Fault(f"crashed: {exit_description(worker.process.exitcode)}", retry=True)

    def stop(self, index: int) -> None:
        worker = self._workers[index]
        if worker is None:
            return
        self._workers[index] = None
        if not worker.busy and worker.process.is_alive():
            try:
                worker.conn.send(None)
                worker.process.join(STOP_GRACE_S)
            except OSError:
                pass
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(STOP_GRACE_S)
        worker.conn.close()

    def close(self) -> None:
        for index in range(self.size):
            self.stop(index)

    def _worker(self, index: int) -> _Worker:
        worker = self._workers[index]
        if worker is None:
            raise RuntimeError(f"sampling worker {index} is not running")
        return worker


class SubprocessSampler(WorkerPoolSampler):
    """Rolls out every call with ``workers`` processes of this machine, each a contiguous share of
    the (task, episode) pairs; the same episodes as :class:`~metarl.rl.sampling.VectorSampler`.

    Args:
        spec: how a worker builds its family and policy, and the sampling settings.
        policy: the policy in this process (see :class:`WorkerPoolSampler`).
        workers: number of worker processes.
        timeout: seconds a worker may take to start or to sample its share of a call.
        max_restarts: restarts of crashed or hung workers allowed within one call.
    """

    def __init__(self, spec: WorkerSpec, policy: Policy, *, workers: int = 2, timeout: float = 300.0,
                 max_restarts: int = 3) -> None:
        check_pool_settings(workers, timeout, max_restarts)
        super().__init__(ProcessPool(spec, workers), policy, timeout=timeout, max_restarts=max_restarts)
