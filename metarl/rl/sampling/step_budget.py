"""Episodes collected to a step budget, as the reference implementation of Finn et al. collects them.

rllab collects a task's episodes until they hold a budget of ``E * horizon`` steps, in one of two ways,
and the returns the authors report are means over what was collected:

* ``keep_running=False``, the vectorised sampler (the authors' navigation training, ``n_parallel=1``):
  ``n`` environments step in lockstep, each reset as soon as its episode ends; the collection stops at
  the end of the first time step at which the *completed* episodes hold the budget, and episodes
  still running are dropped. Episodes that end early (a navigation agent reaching its goal) are
  therefore over-represented.
* ``keep_running=True``, the parallel sampler (``BatchSampler`` with ``n_parallel`` workers: the
  authors' locomotion training, 8 workers, and every test script, 4 workers): each worker runs whole
  episodes one after another and starts none once the completed ones hold the budget; episodes under
  way then run to their end and are kept. With fixed-length episodes that is ``E + n - 1`` episodes.
  Workers are taken to run at one step per unit of time, started in order: at the same instant,
  worker ``j`` acts before worker ``j + 1`` (their processes race; this order is the one that
  keeps every worker busy).

Because the policy does not change during a collection, the episodes environment (or worker) ``j``
runs one after another are independent draws: round ``r`` of ``n`` episodes per task supplies every
environment's ``r``-th episode, and rounds are drawn until the selection is settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace

import torch
from torch import Tensor

from envs import Task
from metarl.params import Params
from metarl.rl.sampling.base import Sampler
from metarl.rl.sampling.episodes import Episodes


def step_budget_selection(lengths: Tensor, budget: int, keep_running: bool = False) -> tuple[Tensor, Tensor]:
    """Which of the drawn episodes the collection keeps, and whether that is settled.

    Args:
        lengths: (R, B, n) episode lengths; ``lengths[r, b, j]`` is the ``r``-th episode that
            environment (or worker) ``j`` of task ``b`` runs.
        budget: completed steps per task at which the collection stops.
        keep_running: keep the episodes under way at the stop (the parallel sampler) instead of
            dropping them (the vectorised sampler); see the module docstring.

    Returns:
        ``keep`` (R, B, n) bool, and ``settled`` (B,) bool: the stop is reached and every
        environment's drawn episodes cover it (episodes not yet drawn could not end before it, nor
        start). Where not settled, more rounds are needed and ``keep`` is meaningless.
    """
    rounds, tasks, envs = lengths.shape
    ends = lengths.cumsum(0)  # the time step at which each episode ends
    # an event's time: lockstep environments finish together; workers in order within a step
    worker = torch.arange(envs).view(1, 1, envs) if keep_running else torch.zeros(1, 1, envs, dtype=torch.int64)
    end_times = ends * envs + worker
    flat_ends, order = end_times.permute(1, 0, 2).reshape(tasks, rounds * envs).sort(1)
    flat_ends = flat_ends.contiguous()
    flat_lengths = torch.gather(lengths.permute(1, 0, 2).reshape(tasks, rounds * envs), 1, order)
    # completed steps at each end: all episodes ending at the same time count, in sorted order the
    # last of them carries the total
    last_of_time = torch.searchsorted(flat_ends, flat_ends, right=True) - 1
    completed = torch.gather(flat_lengths.cumsum(1), 1, last_of_time)
    reached = completed >= budget
    never = torch.iinfo(torch.int64).max
    stop = torch.where(reached, flat_ends, torch.full_like(flat_ends, never)).min(1).values  # (B,)
    covered = end_times[-1].min(1).values  # (B,): the shortest coverage over environments
    settled = reached.any(1) & (covered >= stop)
    if keep_running:
        keep = (end_times - lengths * envs) < stop.view(1, tasks, 1)  # started before the stop
    else:
        keep = end_times <= stop.view(1, tasks, 1)  # completed by the stop
    return keep, settled


class StepBudgetSampler(Sampler):
    """Wraps a sampler of ``n`` episodes per task into the reference implementation's collection:
    ``n`` environments (or workers) per task until completed episodes hold ``budget`` steps (default
    ``n * horizon``), episodes under way dropped or, with ``keep_running``, kept (see the module
    docstring). Returns the kept episodes of every task first on the episode axis; a task with
    fewer than the most has absent episodes after them (``mask`` zero at every step, left out of
    every mean). Later rounds roll out only the tasks whose selection is not yet settled."""

    def __init__(self, sampler: Sampler, horizon: int, budget: int | None = None, keep_running: bool = False) -> None:
        self.inner = sampler
        self.policy, self.episodes_per_task = sampler.policy, sampler.episodes_per_task
        self.seed, self.dtype = sampler.seed, sampler.dtype
        self.horizon = horizon
        self.budget = sampler.episodes_per_task * horizon if budget is None else budget
        self.keep_running = keep_running
        # by time t every environment has completed at least t - horizon + 1 steps (its episodes last a
        # step at least and at most the horizon), so the stop comes by ceil(budget / n) + horizon - 1,
        # and each environment's episodes up to it are among that many rounds, plus one covering it
        self.max_rounds = -(-self.budget // sampler.episodes_per_task) + horizon

    def sample(self, tasks: Sequence[Task], params: Params, key: Sequence[int]) -> Episodes:
        batched = self.policy.is_task_batched(params)
        settled = torch.zeros(len(tasks), dtype=torch.bool)
        rounds: list[Episodes] = []
        lengths: list[Tensor] = []
        while len(rounds) < self.max_rounds:
            todo = torch.nonzero(~settled).view(-1)
            subset = {k: v[todo] for k, v in params.items()} if batched else params
            drawn = self.inner.sample([tasks[i] for i in todo.tolist()], subset, (*key, len(rounds)))
            rounds.append(_scatter_tasks(drawn, todo, len(tasks)))
            round_lengths = rounds[-1].mask.sum(0).round().to(torch.int64)
            round_lengths[settled] = self.horizon  # placeholders for tasks settled earlier: they end after the stop
            lengths.append(round_lengths)
            keep, settled = step_budget_selection(torch.stack(lengths), self.budget, self.keep_running)
            if bool(settled.all()):
                return _kept(rounds, keep)
        raise RuntimeError(f"the step budget of {self.budget} steps per task was not reached in {self.max_rounds} "
                           "rounds of episodes; are the episodes empty?")

    def close(self) -> None:
        self.inner.close()


def _scatter_tasks(drawn: Episodes, rows: Tensor, num_tasks: int) -> Episodes:
    """``drawn`` (episodes of the tasks ``rows``) placed in a batch of ``num_tasks`` tasks, zero elsewhere."""
    if len(rows) == num_tasks:  # every task drawn (always the first round): already in place
        return drawn
    full = {}
    for f in fields(Episodes):
        value = getattr(drawn, f.name)
        out = value.new_zeros(value.shape[0], num_tasks, *value.shape[2:])
        out[:, rows] = value
        full[f.name] = out
    return replace(drawn, **full)


def _kept(rounds: list[Episodes], keep: Tensor) -> Episodes:
    """The kept episodes of every task, first on the episode axis (in order of round, then
    environment); the axis is as long as the most any task kept, the rest absent (zero)."""
    horizon = max(r.horizon for r in rounds)
    tasks = keep.shape[1]
    kept = keep.permute(1, 0, 2).reshape(tasks, -1)  # (B, R * n), rounds side by side
    order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :int(kept.sum(1).max())]
    present = torch.gather(kept, 1, order)
    out = {}
    for f in fields(Episodes):
        value = torch.cat([_pad_time(getattr(r, f.name), horizon) for r in rounds], dim=2)
        index = order.view(1, tasks, -1, *([1] * (value.dim() - 3))).expand(value.shape[0], -1, -1, *value.shape[3:])
        chosen = torch.gather(value, 2, index)
        weight = present.view(1, tasks, -1, *([1] * (value.dim() - 3))).to(value.dtype)
        out[f.name] = chosen * weight
    return replace(rounds[0], **out)


def _pad_time(value: Tensor, horizon: int) -> Tensor:
    if value.shape[0] == horizon:
        return value
    pad = value.new_zeros(horizon - value.shape[0], *value.shape[1:])
    return torch.cat([value, pad])
