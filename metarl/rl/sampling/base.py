"""The interface every sampler implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType

import torch

from envs import Task
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sampling.episodes import Episodes


class Sampler(ABC):
    """Collects ``episodes_per_task`` episodes of every task of a call, at the call's parameters.

    Same seed and key, same episodes, whatever the back-end. A sampler holding workers stops them
    in :meth:`close`; use it as a context manager (``with build_sampler(...) as sampler:``) so that
    they stop also on an exception or Ctrl-C.
    """

    policy: Policy
    episodes_per_task: int
    seed: int
    dtype: torch.dtype

    @abstractmethod
    def sample(self, tasks: Sequence[Task], params: Params, key: Sequence[int]) -> Episodes:
        """Roll out ``episodes_per_task`` episodes of every task.

        Args:
            tasks: the B tasks.
            params: one parameter set for all tasks, or a task-batched set (leading axis B).
            key: integers identifying this draw (for example iteration, phase, step); the
                same key and seed always give the same episodes.
        """

    def close(self) -> None:  # noqa: B027 (optional hook: in-process samplers hold no workers)
        """Release the sampler's workers (nothing to release in-process); safe to call twice."""

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
