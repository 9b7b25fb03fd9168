"""Rollout collection: the episodes of every task of a meta-batch, into one padded :class:`Episodes` batch.

:class:`VectorSampler` rolls out every episode of a call in this process, in one vectorised loop;
every episode is a function of its own (task, episode) pair (see :mod:`metarl.sampling.rollout`).
"""

from metarl.sampling.base import Sampler
from metarl.sampling.episodes import Episodes
from metarl.sampling.rollout import episode_generators
from metarl.sampling.vector import VectorSampler

__all__ = [
    "Episodes",
    "Sampler",
    "VectorSampler",
    "episode_generators",
]
