"""The rollout loop every back-end runs: the episodes of a range of (task, episode) pairs.

A sampler call asks for M episodes of each of B tasks, B x M (task, episode) pairs numbered
task-major: pair ``p`` is episode ``p % M`` of task ``p // M``. The in-process sampler rolls out
all of them at once; a worker rolls out a contiguous range of them (its shard). Three rules make
every episode a function of its own pair only, so that any split of the pairs among workers gives
the same episodes, bit for bit:

* Randomness is keyed per episode: episode ``e`` of task ``i`` in the draw ``key`` uses its own
  generator seeded by ``(seed, *key, i, e)`` (its reset seed, then its action noise).
* The policy runs per task, on a block of M rows, one per episode of the task in episode order
  (rows of pairs outside the range hold zeros and are ignored): shared parameters are expanded to
  one set per task, so every back-end computes the same matrix products, of the same shapes.
  (One matrix product over all B x M rows would round a row differently depending on how many
  rows there are.)
* Torch runs the rollout on one thread: a multi-threaded matrix product may split its sums
  differently from a single-threaded one.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from envs import BatchedTaskEnv, Task, TaskFamily
from metarl.policies import Params, Policy
from metarl.sampling.episodes import Episodes


@dataclass(frozen=True)
class PairRange:
    """The pairs ``start .. stop - 1`` of a call's (task, episode) pairs, ``episodes_per_task`` per task."""

    start: int
    stop: int
    episodes_per_task: int

    @property
    def first_task(self) -> int:
        return self.start // self.episodes_per_task

    @property
    def end_task(self) -> int:
        """One past the last task with a pair in the range."""
        return -(-self.stop // self.episodes_per_task)

    @property
    def num_tasks(self) -> int:
        return self.end_task - self.first_task

    def present(self) -> np.ndarray:
        """(num_tasks, M) booleans: which episodes of the range's tasks are in the range."""
        pairs = np.arange(self.first_task, self.end_task)[:, None] * self.episodes_per_task + np.arange(
            self.episodes_per_task)
        return (pairs >= self.start) & (pairs < self.stop)


def episode_generator(seed: int, key: Sequence[int], task: int, episode: int) -> np.random.Generator:
    """The generator of episode ``episode`` of task ``task`` in the draw ``key``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*key, task, episode)))


def episode_generators(seed: int, key: Sequence[int], num_tasks: int, episodes: int) -> list[np.random.Generator]:
    """One independent generator per (task, episode) of the draw ``key``, task-major."""
    return [episode_generator(seed, key, i, e) for i in range(num_tasks) for e in range(episodes)]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Torch on one thread inside the block; the previous thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rollout(family: TaskFamily, policy: Policy, tasks: Sequence[Task], params: Params, *, seed: int,
            key: Sequence[int], pairs: PairRange, dtype: torch.dtype) -> Episodes:
    """Roll out the episodes of ``pairs``.

    Args:
        family: builds the batched environment.
        policy: the policy (parameters come in ``params``).
        tasks: the tasks ``pairs.first_task .. pairs.end_task - 1``.
        params: one parameter set, or one per task of ``tasks`` (a leading task axis).
        seed, key: identify the draw (see :func:`episode_generator`).
        pairs: the (task, episode) pairs to roll out.
        dtype: floating-point type of the returned tensors.

    Returns:
        Episodes of shape (T, pairs.num_tasks, M): the episodes of ``tasks``, with the entries of
        episodes outside the range zero (mask 0); T is the length of the longest episode.
    """
    M, num_tasks = pairs.episodes_per_task, pairs.num_tasks
    rows = np.flatnonzero(pairs.present())  # the range's pairs among the num_tasks x M rows
    env = family.make_batched([tasks[row // M] for row in rows])
    rngs = [episode_generator(seed, key, pairs.first_task + row // M, row % M) for row in rows]
    reset_seeds = np.array([rng.integers(2**31) for rng in rngs], dtype=np.int64)
    drawn = np.stack([policy.draw_noise(rng, env.horizon) for rng in rngs], axis=1)  # (T, rows, ...)
    noise_rows = np.zeros((env.horizon, num_tasks * M, *drawn.shape[2:]), dtype=drawn.dtype)
    noise_rows[:, rows] = drawn
    noise = torch.from_numpy(noise_rows).to(dtype).view(env.horizon, num_tasks, M, *drawn.shape[2:])
    with single_threaded():
        return _run(env, policy, _per_task(policy, params, num_tasks, dtype), noise, reset_seeds, rows, dtype)


def _per_task(policy: Policy, params: Params, num_tasks: int, dtype: torch.dtype) -> Params:
    """``params`` detached, cast, with one set per task (shared parameters are copied to every task)."""
    params = {k: v.detach().to(dtype) for k, v in params.items()}
    if policy.is_task_batched(params):
        return params
    return {k: v.expand(num_tasks, *v.shape).contiguous() for k, v in params.items()}


def _run(env: BatchedTaskEnv, policy: Policy, params: Params, noise: Tensor, reset_seeds: np.ndarray,
         rows: np.ndarray, dtype: torch.dtype) -> Episodes:
    """The time loop over blocks of M rows per task (``noise`` is (T, B, M, ...)); only ``rows``
    (flat indices into the B x M rows, in the env's order) are stepped."""
    horizon, B, M = noise.shape[:3]
    obs = env.reset(reset_seeds)
    obs_rows = np.zeros((B * M, obs.shape[-1]), dtype=obs.dtype)
    obs_rows[rows] = obs
    obs_buf = torch.zeros((horizon, B, M, obs.shape[-1]), dtype=dtype)
    act_buf: Tensor | None = None
    rew_buf = torch.zeros((horizon, B, M), dtype=torch.float64)
    mask_buf = torch.zeros((horizon, B, M), dtype=dtype)
    logp_buf = torch.zeros((horizon, B, M), dtype=dtype)
    alive = np.zeros(B * M, dtype=bool)
    alive[rows] = True
    act = policy.actor(params, noise)  # params are detached: nothing here records a graph
    for t in range(horizon):
        obs_t = torch.tensor(obs_rows, dtype=dtype).view(B, M, -1)
        with torch.no_grad():
            actions, log_probs = act(t, obs_t)
        if act_buf is None:
            act_buf = torch.zeros((horizon, *actions.shape), dtype=actions.dtype)
        obs_buf[t], act_buf[t], logp_buf[t] = obs_t, actions, log_probs
        mask_buf[t] = torch.from_numpy(alive).view(B, M).to(dtype)
        stepped = actions.reshape(B * M, *actions.shape[2:])[torch.from_numpy(rows)]
        obs, reward, terminated, truncated = env.step(stepped.numpy())
        obs_rows[rows] = obs
        reward_rows = np.zeros(B * M)
        reward_rows[rows] = np.where(alive[rows], reward, 0.0)
        rew_buf[t] = torch.from_numpy(reward_rows).view(B, M)
        alive[rows] &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    assert act_buf is not None
    keep = mask_buf.sum((1, 2)) > 0
    obs_buf, act_buf, rew_buf, mask_buf, logp_buf = (
        buf[keep] for buf in (obs_buf, act_buf, rew_buf, mask_buf, logp_buf)
    )
    obs_buf = obs_buf * mask_buf.unsqueeze(-1)
    act_buf = act_buf * (mask_buf.unsqueeze(-1) if act_buf.dim() == 4 else mask_buf.long())
    return Episodes(obs_buf, act_buf, rew_buf.to(dtype), mask_buf, logp_buf * mask_buf)
