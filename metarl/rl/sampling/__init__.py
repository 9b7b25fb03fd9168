"""Rollout collection: the episodes of every task of a meta-batch, into one padded :class:`Episodes` batch.

Three back-ends, the same episodes for the same seed and key (see :mod:`metarl.rl.sampling.rollout`):

* :class:`VectorSampler`: in this process, every episode of a call in one vectorised loop;
* :class:`SubprocessSampler`: a pool of worker processes on this machine, each rolling out a
  contiguous share of the call's (task, episode) pairs;
* :class:`RaySampler`: the same with Ray actors, on a local Ray instance or a cluster (Ray is
  optional: ``pip install "metarl[ray]"``).

Worker back-ends detect crashed and hung workers, restart them and sample their share again, or
stop with a :class:`WorkerError` naming the worker and the cause (see :mod:`metarl.rl.sampling.pool`).
"""

from metarl.rl.sampling.base import Sampler
from metarl.rl.sampling.episodes import Episodes
from metarl.rl.sampling.pool import WorkerError, WorkerRestartWarning
from metarl.rl.sampling.processes import SubprocessSampler
from metarl.rl.sampling.ray_actors import RaySampler
from metarl.rl.sampling.rollout import episode_generators
from metarl.rl.sampling.shards import WorkerSpec
from metarl.rl.sampling.vector import VectorSampler

__all__ = [
    "Episodes",
    "RaySampler",
    "Sampler",
    "SubprocessSampler",
    "VectorSampler",
    "WorkerError",
    "WorkerRestartWarning",
    "WorkerSpec",
    "episode_generators",
]
