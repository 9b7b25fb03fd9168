"""Sampling with a pool of workers, and what happens when one fails.

:class:`WorkerPoolSampler` cuts every call into one shard per worker (see
:mod:`metarl.rl.sampling.shards`), sends the shards out with the call's parameters, and merges the
episodes that come back. A :class:`WorkerPool` is the transport: worker processes of this machine
(:mod:`metarl.rl.sampling.processes`) or Ray actors (:mod:`metarl.rl.sampling.ray_actors`).

Faults, within one call:

* A worker that dies (killed, segmentation fault) or sends no reply within ``timeout`` seconds
  is killed, started again, and its shard is sampled again: the same episodes, since they depend
  only on the seed and the call's key. After ``max_restarts`` restarts in one call, the next fault
  stops the run with a :class:`WorkerError`.
* An exception raised in a worker (by the environment, say) would be raised again by the same
  shard: :class:`WorkerError` at once, with the worker's traceback.

After a :class:`WorkerError`, or any exception while a call waits (Ctrl-C included), every worker
is stopped and the sampler is closed. Workers also stop when the sampler is closed or garbage
collected, and when the main process exits.
"""

from __future__ import annotations

import time
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs import Task
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sampling.base import Sampler
from metarl.rl.sampling.episodes import Episodes
from metarl.rl.sampling.shards import ShardJob, WorkerSpec, make_jobs, merge_shards

POLL_S = 0.5  # longest single wait: a Ctrl-C delivered to another thread is acted on within this


def _slice(deadline: float) -> float:
    """Seconds to wait now for a ``deadline`` (``time.monotonic()``): at most :data:`POLL_S`, so that
    the main thread returns to Python often enough to run its signal handlers (KeyboardInterrupt)."""
    return max(0.0, min(POLL_S, deadline - time.monotonic()))


class WorkerError(RuntimeError):
    """A sampling worker crashed, hung, raised an exception or could not start; the message says
    which worker and why."""


class WorkerRestartWarning(RuntimeWarning):
    """A crashed or hung worker was restarted and its share is being sampled again."""


@dataclass(frozen=True)
class Fault:
    """What went wrong with a worker: ``cause`` for messages, whether a restart may help, and the
    worker's traceback when it raised."""

    cause: str
    retry: bool
    detail: str = ""


class WorkerPool(ABC):
    """``size`` workers of one kind, each running :class:`ShardJob` s one at a time.

    A worker's first reply, once it has built its family and policy, is its process id; later
    replies are the arrays of its jobs. :meth:`wait` returns a :class:`Fault` instead when the
    worker died or raised.
    """

    kind: str  # in messages: "subprocess" or "Ray actor"

    def __init__(self, spec: WorkerSpec, size: int) -> None:
        self.spec, self.size = spec, size
        self.pids: list[int | None] = [None] * size

    @abstractmethod
    def launch(self, index: int) -> None:
        """Start worker ``index`` (without waiting for it)."""

    @abstractmethod
    def submit(self, index: int, job: ShardJob) -> None:
        """Send a job to worker ``index`` (a dead worker is reported by :meth:`wait`)."""

    @abstractmethod
    def wait(self, indices: Sequence[int], timeout: float) -> dict[int, Any | Fault]:
        """The replies of those of ``indices`` that have one, waiting up to ``timeout`` seconds for a first."""

    @abstractmethod
    def stop(self, index: int) -> None:
        """Stop worker ``index`` at once (killing it if it is busy or does not exit)."""

    @abstractmethod
    def close(self) -> None:
        """Stop every worker and release the transport; safe to call twice."""

    def describe(self, index: int) -> str:
        pid = self.pids[index]
        return f"sampling worker {index} of {self.size} ({self.kind}{'' if pid is None else f', pid {pid}'})"

    def start(self, indices: Sequence[int], timeout: float) -> None:
        """Launch the workers ``indices`` and wait until each has built its family and policy."""
        for index in indices:
            self.launch(index)
        deadline, pending = time.monotonic() + timeout, set(indices)
        while pending:
            replies = self.wait(sorted(pending), _slice(deadline))
            for index, reply in replies.items():
                if isinstance(reply, Fault):
                    raise WorkerError(f"{self.describe(index)} failed to start: {reply.cause}{_traceback(reply)}")
                self.pids[index] = reply
                pending.discard(index)
            if pending and time.monotonic() >= deadline:
                raise WorkerError(f"{self.describe(min(pending))} did not start within sampler.timeout = "
                                  f"{timeout:g} s{self.start_hint()}")

    def start_hint(self) -> str:
        """What may keep workers from starting (appended to the message)."""
        return ""

    def restart(self, index: int, timeout: float) -> None:
        self.stop(index)
        self.pids[index] = None
        self.start([index], timeout)


def check_pool_settings(workers: int, timeout: float, max_restarts: int) -> None:
    """``ValueError`` unless workers >= 1, timeout > 0 and max_restarts >= 0 (checked before any worker starts)."""
    if workers < 1 or not timeout > 0 or max_restarts < 0:
        raise ValueError(f"workers = {workers} must be >= 1, timeout = {timeout} > 0 and "
                         f"max_restarts = {max_restarts} >= 0")


def _traceback(fault: Fault) -> str:
    return f"\n\nthe worker's traceback:\n{fault.detail.rstrip()}" if fault.detail else ""


class WorkerPoolSampler(Sampler):
    """A sampler whose episodes are rolled out by a pool of workers, with the faults handled as the
    module docstring says.

    Args:
        pool: the workers (not yet started: the sampler starts them and waits for them).
        policy: the policy in this process (the oracle computes log-probabilities with it); the
            workers build theirs with ``pool.spec.build``, the same architecture.
        timeout: seconds a worker may take to start, or to sample its share of one call, before
            it counts as hung.
        max_restarts: restarts of crashed or hung workers allowed within one call.
    """

    def __init__(self, pool: WorkerPool, policy: Policy, *, timeout: float, max_restarts: int) -> None:
        self.pool, self.policy = pool, policy
        self.episodes_per_task, self.seed, self.dtype = pool.spec.episodes_per_task, pool.spec.seed, pool.spec.dtype
        self.timeout, self.max_restarts = timeout, max_restarts
        self._finalizer = weakref.finalize(self, pool.close)
        self._closed_by: str | None = None
        self._guarded(pool.start, range(pool.size), timeout)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def worker_pids(self) -> list[int | None]:
        """The process id of every worker (after a restart, the new one's)."""
        return list(self.pool.pids)

    def close(self) -> None:
        self._finalizer()

    def sample(self, tasks: Sequence[Task], params: Params, key: Sequence[int]) -> Episodes:
        if self.closed:
            raise RuntimeError(f"the sampler is closed{f' (after: {self._closed_by})' if self._closed_by else ''}")
        jobs = make_jobs(tasks, params, key, self.episodes_per_task, self.pool.size,
                         self.policy.is_task_batched(params))
        arrays = self._guarded(self._run, jobs)
        return merge_shards([(job.pairs, arrays[index]) for index, job in enumerate(jobs)], len(tasks))

    def _guarded(self, work: Any, *args: Any) -> Any:
        """``work(*args)``, closing the sampler if anything escapes (an error, Ctrl-C)."""
        try:
            return work(*args)
        except BaseException as error:
            self._closed_by = f"{type(error).__name__}: {error}".split("\n")[0]
            self.close()
            raise

    def _run(self, jobs: list[ShardJob]) -> dict[int, dict[str, np.ndarray]]:
        """Job ``i`` on worker ``i``; crashed or hung workers restarted (their job sent again)."""
        results: dict[int, dict[str, np.ndarray]] = {}
        deadlines: dict[int, float] = {}
        restarts = 0
        for index, job in enumerate(jobs):
            self.pool.submit(index, job)
            deadlines[index] = time.monotonic() + self.timeout
        while len(results) < len(jobs):
            waiting = [index for index in range(len(jobs)) if index not in results]
            replies = self.pool.wait(waiting, _slice(min(deadlines[i] for i in waiting)))
            now = time.monotonic()
            faults = {i: reply for i, reply in replies.items() if isinstance(reply, Fault)}
            faults.update({i: Fault(f"hung: no reply within sampler.timeout = {self.timeout:g} s", retry=True)
                           for i in waiting if i not in replies and now >= deadlines[i]})
            results.update({i: reply for i, reply in replies.items() if not isinstance(reply, Fault)})
            for index, fault in sorted(faults.items()):
                restarts = self._recover(index, jobs[index], fault, restarts)
                self.pool.submit(index, jobs[index])
                deadlines[index] = time.monotonic() + self.timeout
        return results

    def _recover(self, index: int, job: ShardJob, fault: Fault, restarts: int) -> int:
        """Restart a worker after ``fault`` (returning the call's restart count), or raise :class:`WorkerError`."""
        where = f"{self.pool.describe(index)} {fault.cause} (sampling {job.describe()} of the call)"
        if not fault.retry:
            raise WorkerError(f"{where}{_traceback(fault)}")
        if restarts >= self.max_restarts:
            raise WorkerError(f"{where}; not restarted: {restarts} restart(s) in this call already, "
                              f"the limit sampler.max_restarts = {self.max_restarts}")
        warnings.warn(f"{where}; restarting it and sampling its share again", WorkerRestartWarning, stacklevel=2)
        self.pool.restart(index, self.timeout)
        return restarts + 1
