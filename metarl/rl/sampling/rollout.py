"""The rollout loop every back-end runs: the episodes of a range of (task, episode) pairs.

A sampler call asks for M episodes of each of B tasks, B x M (task, episode) pairs numbered
task-major: pair ``p`` is episode ``p % M`` of task ``p // M``. The in-process sampler rolls out
all of them (in chunks of whole tasks where the family prefers smaller batched envs); a worker rolls
out a contiguous range of them (its shard). Four rules make every episode a function of its own pair
only, so that any split of the pairs among workers or chunks gives the same episodes, bit for bit:

* Randomness is keyed per episode: episode ``e`` of task ``i`` in the draw ``key`` uses its own
  generator seeded by ``(seed, *key, i, e)`` (its reset seed, then its action noise).
* The policy runs per task, on a block of M rows, one per episode of the task in episode order
  (rows of pairs outside the range hold zeros and are ignored): shared parameters are expanded to
  one set per task, so every back-end computes the same matrix products, of the same shapes.
  (One matrix product over all B x M rows would round a row differently depending on how many
  rows there are.)
* Every task's block of observations starts on a 16-byte boundary: MKL rounds a matrix product
  differently when its operand sits at another alignment.
* Torch runs the rollout on one thread: a multi-threaded matrix product may split its sums
  differently from a single-threaded one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from envs import BatchedTaskEnv, Task, TaskFamily
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sampling.episodes import Episodes


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

    The tasks are rolled out in chunks of whole tasks of at most ``family.preferred_batch_size`` copies
    (all at once when it is None), one batched environment and one time loop per chunk; every
    episode is the same whatever the chunks.

    Args:
        family: builds the batched environments.
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
    rngs = [episode_generator(seed, key, pairs.first_task + row // M, row % M) for row in rows]
    reset_seeds = np.array([rng.integers(2**31) for rng in rngs], dtype=np.int64)
    drawn = np.stack([policy.draw_noise(rng, family.horizon) for rng in rngs], axis=1)  # (T, rows, ...)
    noise_rows = np.zeros((family.horizon, num_tasks * M, *drawn.shape[2:]), dtype=drawn.dtype)
    noise_rows[:, rows] = drawn
    noise = torch.from_numpy(noise_rows).to(dtype).view(family.horizon, num_tasks, M, *drawn.shape[2:])
    params = _per_task(policy, params, num_tasks, dtype)
    parts = []
    with single_threaded():
        for first, end in _task_chunks(num_tasks, M, family.preferred_batch_size):
            in_chunk = (rows >= first * M) & (rows < end * M)
            env = family.make_batched([tasks[row // M] for row in rows[in_chunk]])
            chunk_params = {k: v[first:end] for k, v in params.items()}
            parts.append(_run(env, policy, chunk_params, noise[:, first:end], reset_seeds[in_chunk],
                              rows[in_chunk] - first * M, dtype))
            if hasattr(env, "close"):
                env.close()  # its simulators go back to the family for the next chunk
    return parts[0] if len(parts) == 1 else _concatenate_tasks(parts)


def _task_chunks(num_tasks: int, episodes_per_task: int, batch_size: int | None) -> list[tuple[int, int]]:
    """Consecutive ranges of whole tasks with at most ``batch_size`` copies each (at least one task)."""
    per_chunk = num_tasks if batch_size is None else max(1, batch_size // episodes_per_task)
    return [(first, min(first + per_chunk, num_tasks)) for first in range(0, num_tasks, per_chunk)]


def _concatenate_tasks(parts: Sequence[Episodes]) -> Episodes:
    """The chunks' episodes side by side on the task axis, padded to the longest episode."""
    horizon = max(part.horizon for part in parts)

    def padded(tensor: Tensor) -> Tensor:
        return torch.cat([tensor, tensor.new_zeros((horizon - tensor.shape[0], *tensor.shape[1:]))])

    return Episodes(*(torch.cat([padded(getattr(part, f.name)) for part in parts], dim=1) for f in fields(Episodes)))


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
    obs_buf = _observation_buffer(horizon, B, M, obs.shape[-1], dtype)  # (T, B, M, obs_dim)
    rew_buf = np.zeros((horizon, B * M))
    alive_buf = np.zeros((horizon, B * M), dtype=bool)
    logp_buf = torch.zeros((horizon, B, M), dtype=dtype)
    act_buf: Tensor | None = None
    every_row = len(rows) == B * M
    at = slice(None) if every_row else rows  # where the env's copies sit among the rows
    at_block = (slice(None),) if every_row else (rows // M, rows % M)  # the same in (task, episode) form
    obs_buf[0][at_block] = obs.reshape(B, M, -1) if every_row else obs
    alive = np.zeros(B * M, dtype=bool)
    alive[rows] = True
    act = policy.actor(params, noise)  # params are detached: nothing here records a graph
    steps = 0
    for t in range(horizon):
        obs_t = torch.from_numpy(obs_buf[t])
        with torch.no_grad():
            actions, log_probs = act(t, obs_t)
        if act_buf is None:
            act_buf = torch.zeros((horizon, *actions.shape), dtype=actions.dtype)
        act_buf[t], logp_buf[t] = actions, log_probs
        alive_buf[t] = alive
        stepped = act_buf[t].view(B * M, *actions.shape[2:]).numpy()[at]
        obs, reward, terminated, truncated = env.step(stepped)
        steps = t + 1
        if t + 1 < horizon:
            obs_buf[t + 1][at_block] = obs.reshape(B, M, -1) if every_row else obs
        rew_buf[t, at] = reward  # a done copy's reward is 0.0
        alive[at] &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    assert act_buf is not None
    mask = torch.from_numpy(alive_buf[:steps]).to(dtype).view(steps, B, M)
    observations = torch.from_numpy(obs_buf[:steps]) * mask.unsqueeze(-1)
    act_buf = act_buf[:steps] * (mask.unsqueeze(-1) if act_buf.dim() == 4 else mask.long())
    rewards = torch.from_numpy(rew_buf[:steps]).view(steps, B, M).to(dtype)
    return Episodes(observations, act_buf, rewards, mask, logp_buf[:steps] * mask)


def _observation_buffer(horizon: int, B: int, M: int, obs_dim: int, dtype: torch.dtype) -> np.ndarray:
    """A zeroed (T, B, M, obs_dim) array to write observations into (``torch.from_numpy`` views it as is).

    Each task's block of M rows starts on a 16-byte boundary (blocks are padded to a multiple of four
    numbers): MKL's matrix products round differently at other alignments, and a task's block would
    otherwise sit at an alignment that depends on the tasks before it, so its episodes would depend on
    how a call is cut into chunks or shards. Where blocks are multiples of four numbers, as with 20
    episodes per task, there is no padding.
    """
    block = M * obs_dim
    padded = -(-block // 4) * 4
    storage = np.zeros((horizon, B, padded), dtype=torch.empty((), dtype=dtype).numpy().dtype)
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage, (horizon, B, M, obs_dim), (storage.strides[0], padded * item, obs_dim * item, item))
