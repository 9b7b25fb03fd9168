"""Sampling throughput on the locomotion families: the metarl sampler against raw env stepping,
and the sampler's back-ends (``sampler.kind``) side by side.

First table, for every family, in one process with one torch thread, in environment steps per second:

* ``raw gym.make``: the registered single env (``gym.make("metarl/HalfCheetahVel-v0")``, with
  Gymnasium's wrappers) stepped with random actions drawn beforehand, reset when done;
* ``raw env``: the same env without wrappers (``family.make_env(task)``), which is what
  a hand-written rollout loop over Gymnasium envs would step;
* ``sampler``: ``metarl.sampling.VectorSampler.sample`` with a 100x100 Gaussian MLP policy in the
  loop and one parameter set per task (as in meta-training), tasks x episodes x horizon steps,
  building its batched env included;
* ``ratio``: sampler / raw env (the bar: >= 0.7 for HalfCheetah);
* ``physics``: ``mujoco.mj_step`` alone on one simulator (plus ``mj_rnePostConstraint`` where
  the contact forces are used), no observation or reward: the ceiling for any sampler.

Time is the CPU time of this (single-threaded) process, ``time.process_time``: on an idle
machine it equals wall-clock time, and on a shared one it does not count the time the other
load takes the core away. Every measurement is also repeated ``--rounds`` times, interleaved,
and the best of each is reported.

Second table, the back-ends: the same call (same tasks, parameters and policy) through
``vector`` (in this process), ``subprocess`` and ``ray`` with every count of ``--workers``, as
built from a config by ``metarl.build.build_sampler``. Workers run in other processes, so this
table is in wall-clock time: env steps per second of one ``sample`` call (best of ``--rounds``,
after one call to warm up), the time to start the workers, and the speed-up over ``vector``.
Ray runs on a local instance started once for the table. A closing note says what the figures
predict for more cores.

    python scripts/benchmark_sampling.py [--tasks 20] [--episodes 20] [--horizon 200] [--raw-steps 4000] [--rounds 2]
        [--backends vector subprocess ray] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.locomotion import LOCOMOTION_FAMILIES, LocomotionFamily
from metarl.build import build_family, build_policy, build_sampler
from metarl.config import validate
from metarl.logging import format_table
from metarl.oracles import stack_params
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import VectorSampler
from metarl.sampling.ray_actors import import_ray

BACKENDS = ("vector", "subprocess", "ray")


def raw_throughput(env: gym.Env, steps: int, seed: int = 0) -> float:
    """Steps per second of ``env`` under uniformly random actions drawn beforehand."""
    space = env.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, size=(steps, *space.shape)).astype(np.float32)
    env.reset(seed=seed)
    start = time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.process_time() - start)


def physics_throughput(family: LocomotionFamily, steps: int, seed: int = 0) -> float:
    """Steps per second of the bare simulator (frame_skip mj_step calls per env step)."""
    import mujoco

    env = family.make_env()
    env.reset(seed=seed)
    model, data, contacts = env.unwrapped.model, env.unwrapped.data, family.robot.needs_contacts
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, model.nu))
    start = time.process_time()
    for action in actions:
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=family.robot.frame_skip)
        if contacts:
            mujoco.mj_rnePostConstraint(model, data)
    return steps / (time.process_time() - start)


def sampler_throughput(family: LocomotionFamily, tasks: int, episodes: int) -> tuple[float, int]:
    """Steps per second of one VectorSampler.sample call and its number of steps."""
    env = family.make_env()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, (100, 100), "relu", init_std=1.0)
    params = stack_params(policy.init_params(), tasks)
    sampler = VectorSampler(family, policy, episodes, seed=0)
    task_list = family.sample_tasks(tasks, np.random.default_rng(0))
    start = time.process_time()
    batch = sampler.sample(task_list, params, key=(0,))
    return batch.num_steps / (time.process_time() - start), batch.num_steps


def measure(family: LocomotionFamily, args: argparse.Namespace) -> dict[str, float]:
    """Best of ``args.rounds`` interleaved rounds of every measurement, for one family."""
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        round_ = {
            "made": raw_throughput(gym.make(family.env_id, task=task, horizon=args.horizon), args.raw_steps),
            "raw": raw_throughput(family.make_env(task), args.raw_steps),
            "physics": physics_throughput(family, args.raw_steps),
        }
        round_["sampler"], round_["steps"] = sampler_throughput(family, args.tasks, args.episodes)
        best = {k: max(v, best.get(k, 0.0)) for k, v in round_.items()}
    return best


class BackendRow(NamedTuple):
    family: str
    kind: str
    workers: int
    startup_s: float
    steps_per_s: float
    speedup: float  # over the vector sampler (nan without a vector row)
    steps: int

    def cells(self) -> tuple:
        return (self.family, self.kind, "" if self.kind == "vector" else self.workers, f"{self.startup_s:.1f}",
                f"{self.steps_per_s:,.0f}", f"{self.speedup:.2f}", f"{self.steps:,}")


def backend_throughput(name: str, kind: str, workers: int, args: argparse.Namespace) -> tuple[float, float, int]:
    """Wall-clock steps per second of one ``sample`` call through ``sampler.kind = kind`` (best of
    ``args.rounds``, after a warm-up call), the seconds to start the sampler, and the call's steps."""
    config = validate({"env": {"family": name, "kwargs": {"horizon": args.horizon}},
                       "policy": {"hidden_sizes": [100, 100]}, "sampler": {"kind": kind, "workers": workers}})
    family = build_family(config)
    policy = build_policy(config, family)
    params = stack_params(policy.init_params(), args.tasks)
    tasks = family.sample_tasks(args.tasks, np.random.default_rng(0))
    start = time.perf_counter()
    with build_sampler(config, family, policy, seed=0, episodes_per_task=args.episodes) as sampler:
        startup = time.perf_counter() - start
        sampler.sample(tasks, params, key=(0,))
        best, steps = 0.0, 0
        for round_ in range(args.rounds):
            start = time.perf_counter()
            steps = sampler.sample(tasks, params, key=(1 + round_,)).num_steps
            best = max(best, steps / (time.perf_counter() - start))
    return best, startup, steps


def backend_rows(name: str, args: argparse.Namespace) -> list[BackendRow]:
    """The second table's rows for one family."""
    rows: list[BackendRow] = []
    vector = float("nan")
    for kind in args.backends:
        for workers in ([1] if kind == "vector" else args.workers):
            rate, startup, steps = backend_throughput(name, kind, workers, args)
            vector = rate if kind == "vector" else vector
            rows.append(BackendRow(name, kind, workers, startup, rate, rate / vector, steps))
    return rows


def closing_note(rows: list[BackendRow]) -> str:
    """The best speed-up of a worker back-end per family, and what it predicts for more cores."""
    lines = []
    for name in dict.fromkeys(row.family for row in rows):
        measured = [row for row in rows if row.family == name and row.kind != "vector" and row.speedup == row.speedup]
        if measured:
            best = max(measured, key=lambda row: row.speedup)
            lines.append(f"{name}: {best.kind} with {best.workers} worker(s) samples {best.speedup:.2f} times as fast "
                         f"as vector ({best.speedup / best.workers:.2f} per worker).")
    lines.append(
        f"This machine has {os.cpu_count()} cores. A worker rolls out its 1/workers share of the pairs on one core, so "
        "with a free core per worker the speed-up should grow about as workers x the per-worker figure, until the "
        "main process's part of a call (parameters out, episodes merged) dominates; workers beyond the free cores "
        "only share them. On a Ray cluster the per-call transfer goes over the network.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--raw-steps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (the best is reported)")
    parser.add_argument("--families", nargs="+", default=[f.name for f in LOCOMOTION_FAMILIES])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="sampler back-ends of the second table")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts of subprocess and ray")
    args = parser.parse_args()
    ray = import_ray() if "ray" in args.backends else None  # a missing Ray says what to install, before any work
    torch.set_num_threads(1)
    rows = []
    for name in args.families:
        r = measure(envs.make_family(name, horizon=args.horizon), args)
        rows.append((name, f"{r['made']:,.0f}", f"{r['raw']:,.0f}", f"{r['sampler']:,.0f}",
                     f"{r['sampler'] / r['raw']:.2f}", f"{r['physics']:,.0f}", f"{r['sampler'] / r['physics']:.2f}",
                     f"{int(r['steps']):,}"))
    print(f"{args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, 100x100 policy, one process, "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread; env steps per CPU second, "
          f"best of {args.rounds} rounds")
    print(format_table(["family", "raw gym.make", "raw env", "sampler", "ratio", "physics", "sampler/physics",
                        "sampler steps"], rows))
    if ray is not None:
        ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    try:
        table = [row for name in args.families for row in backend_rows(name, args)]
    finally:
        if ray is not None:
            ray.shutdown()
    print(f"\nback-ends: the same calls, env steps per wall-clock second (best of {args.rounds}, after a warm-up "
          "call); start-up: seconds to start the sampler's workers")
    print(format_table(["family", "back-end", "workers", "start-up s", "steps/s", "speed-up", "steps"],
                       [row.cells() for row in table]))
    print(closing_note(table))


if __name__ == "__main__":
    main()
