"""The ``ray`` back-end: workers as Ray actors, on this machine or on a cluster.

Ray is optional (``pip install "metarl[ray]"``) and imported only here, when a :class:`RaySampler`
is built. Without a running Ray instance in the process, the sampler starts a local one (or
connects to the cluster at ``address``) and shuts it down when closed; a Ray instance the process
already initialised is used as it is and left running. Every actor asks Ray for one CPU, so a
cluster needs a free CPU per worker; on a cluster, every node needs metarl installed. Ray's own
restarts are off: the sampler restarts a dead actor itself and samples its share again.

Ray runs its worker processes at niceness 15 by default, below every ordinary process. The
training process waits on its actors, so a local Ray instance that the sampler starts runs them at
niceness 0, like the ``subprocess`` back-end's workers (:func:`local_ray_system_config`): at
niceness 15 on a machine with other busy processes, an actor gets a small fraction of a core and
takes many times longer to start (see docs/sampling.md). A Ray instance started by the caller, or
a cluster, keeps its own setting: pass ``_system_config=local_ray_system_config()`` to ``ray.init``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from envs import MissingDependencyError
from metarl.rl.policies import Policy
from metarl.rl.sampling.pool import Fault, WorkerError, WorkerPool, WorkerPoolSampler, check_pool_settings
from metarl.rl.sampling.shards import ShardJob, ShardRunner, WorkerSpec

INSTALL_HINT = "pip install \"metarl[ray]\" (or pip install \"ray>=2.9\")"


def local_ray_system_config() -> dict[str, Any]:
    """``ray.init(_system_config=...)`` for a local Ray instance: its workers at niceness 0, not
    Ray's 15. A new dict every time: ``ray.init`` adds the session's settings to the one it gets."""
    return {"worker_niceness": 0}


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`MissingDependencyError` saying what to install."""
    try:
        import ray
    except ImportError:
        message = f"sampler.kind = 'ray' needs Ray, which is not installed: {INSTALL_HINT}"
        raise MissingDependencyError(message) from None
    return ray


def check_reachable(address: str, timeout: float) -> None:
    """A ``host:port`` address (a cluster's head) must accept connections within ``timeout``
    seconds: ``ray.init`` would wait for it forever. (``auto`` and ``ray://`` addresses fail by
    themselves.)"""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise WorkerError(f"could not connect to the Ray cluster at sampler.address = {address!r}: "
                          f"{type(error).__name__}: {error}") from None


class RayWorker:
    """The actor: a :class:`ShardRunner` built once, then a job per call."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.runner = ShardRunner(spec)

    def ready(self) -> int:
        return os.getpid()

    def run(self, job: ShardJob) -> Any:
        return self.runner.run(job)


class RayActorPool(WorkerPool):
    """Ray actors (see the module docstring)."""

    kind = "Ray actor"

    def __init__(self, spec: WorkerSpec, size: int, address: str | None = None, timeout: float = 300.0) -> None:
        super().__init__(spec, size)
        self.ray = import_ray()
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            if address:
                check_reachable(address, timeout)
            local = {} if address else {"num_cpus": max(size, os.cpu_count() or 1), "include_dashboard": False,
                                        "_system_config": local_ray_system_config()}
            try:
                self.ray.init(address=address, **local)
            except Exception as error:
                where = f"connect to the Ray cluster at sampler.address = {address!r}" if address else "start Ray"
                raise WorkerError(f"could not {where}: {type(error).__name__}: {error}") from error
        self._actor_class = self.ray.remote(num_cpus=1, max_restarts=0)(RayWorker)
        self._actors: list[Any] = [None] * size
        self._pending: dict[int, Any] = {}  # worker -> the reference of its current call

    def launch(self, index: int) -> None:
        self._actors[index] = self._actor_class.remote(self.spec)
        self._pending[index] = self._actors[index].ready.remote()

    def submit(self, index: int, job: ShardJob) -> None:
        self._pending[index] = self._actors[index].run.remote(job)

    def wait(self, indices: Sequence[int], timeout: float) -> dict[int, Any | Fault]:
        refs = {self._pending[index]: index for index in indices}
        done, _ = self.ray.wait(list(refs), num_returns=1, timeout=timeout)
        if done:  # and every other one finished by now
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return {refs[ref]: self._result(ref) for ref in done}

    def _result(self, ref: Any) -> Any | Fault:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:  # raised in the actor's code
            cause = error.cause if isinstance(error.cause, BaseException) else error
            return Fault(f"raised {type(cause).__name__}: {cause}", retry=False, detail=str(error))
        except self.ray.exceptions.RayError as error:  # the actor died: killed, out of memory, node lost
            first_line = str(error).strip().split("\n")[0]
            return Fault(f"crashed: {type(error).__name__}: {first_line}", retry=True, detail=str(error))

    def stop(self, index: int) -> None:
        actor, self._actors[index] = self._actors[index], None
        self._pending.pop(index, None)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)

    def close(self) -> None:
        for index in range(self.size):
            self.stop(index)
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns_ray = False

    def start_hint(self) -> str:
        return ("; every worker needs one free CPU in the Ray cluster (see ray.available_resources()), and "
                "workers at Ray's default niceness 15 start slowly on a busy machine (see "
                "metarl.rl.sampling.ray_actors.local_ray_system_config)")


class RaySampler(WorkerPoolSampler):
    """Rolls out every call with ``workers`` Ray actors, each a contiguous share of the (task,
    episode) pairs; the same episodes as :class:`~metarl.rl.sampling.VectorSampler`.

    Args:
        spec: how a worker builds its family and policy, and the sampling settings.
        policy: the policy in this process (see :class:`WorkerPoolSampler`).
        workers: number of actors.
        address: the Ray cluster to connect to (``ray.init(address=...)``, for example ``"auto"``, ``"head:6379"`` or
            ``"ray://head:10001"``); ``None`` starts a local Ray instance.
        timeout: seconds a worker may take to start or to sample its share of a call.
        max_restarts: restarts of crashed or hung workers allowed within one call.
    """

    def __init__(self, spec: WorkerSpec, policy: Policy, *, workers: int = 2, address: str | None = None,
                 timeout: float = 300.0, max_restarts: int = 3) -> None:
        check_pool_settings(workers, timeout, max_restarts)
        pool = RayActorPool(spec, workers, address, timeout)
        super().__init__(pool, policy, timeout=timeout, max_restarts=max_restarts)
