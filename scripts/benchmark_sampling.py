"""Sampling on the locomotion families against the physics limit, and a paper-setting meta-iteration.

First table, for every family (the authors' environments, ``robot: rllab``), in wall-clock time:

* ``sampler``: env steps per second of ``metarl.rl.sampling.VectorSampler.sample`` with a 100x100
  Gaussian MLP policy in the loop and one parameter set per task (as after adaptation), tasks x
  episodes x horizon steps, building and resetting its batched envs included;
* ``physics limit``: the same number of env steps of the same model with uniformly random controls
  through ``mujoco.rollout`` (one call, every copy for the whole horizon, in C) on the same threads,
  from the family's initial-state distribution: what the simulator alone can do;
* ``ratio``: sampler / physics limit, the median over ``--rounds`` rounds, each measuring both back
  to back (this machine's speed drifts from minute to minute; a round's two figures share it).

Ant episodes end when the torso leaves [0.2, 1]; the sampler steps only live copies, while the limit
steps every copy to the horizon, so its count is the sampler's in expectation only.

Second table: one MAML TRPO meta-iteration on HalfCheetahVel at the paper's setting (40 tasks x 20
episodes x 200 steps, ``configs/halfcheetah-vel-maml.yaml``), median seconds over ``--iterations`` after
a warm-up, split into its phases.

Third table (``--backends``): the sampler's back-ends side by side (``vector`` in this process,
``subprocess`` and ``ray`` workers), one call each, wall-clock.

    python scripts/benchmark_sampling.py [--tasks 40] [--episodes 20] [--rounds 3] [--iterations 5]
        [--families ...] [--batch-sizes 100 800] [--backends vector subprocess]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

import envs
from envs.locomotion import LOCOMOTION_FAMILIES, LocomotionFamily
from metarl.experiment.build import build_family, build_policy, build_sampler
from metarl.experiment.config import load_config, validate
from metarl.experiment.metrics import format_table
from metarl.params import stack_params
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampling import VectorSampler

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PHASES = ("sampling", "adaptation", "meta_gradient", "update")


class SamplingRow(NamedTuple):
    family: str
    batch_size: int | None
    steps: int
    sampler: float  # env steps per second, median over rounds
    limit: float
    ratio: float  # median over rounds of the per-round ratio
    ratio_range: tuple[float, float]

    def cells(self) -> tuple:
        low, high = self.ratio_range
        return (self.family, self.batch_size or "all", f"{self.steps:,}", f"{self.sampler:,.0f}",
                f"{self.limit:,.0f}", f"{self.ratio:.2f}", f"{low:.2f}-{high:.2f}")


def physics_limit(family: LocomotionFamily, copies: int, threads: int, seed: int = 0) -> float:
    """Env steps per second of ``copies`` x horizon random-control steps through ``mujoco.rollout``."""
    import mujoco
    from mujoco import rollout

    from envs.rllab_robots import build_model, initial_qpos

    model = build_model(family.robot)
    data = mujoco.MjData(model)
    full = mujoco.mjtState.mjSTATE_FULLPHYSICS
    rng = np.random.default_rng(seed)
    states = np.zeros((copies, mujoco.mj_stateSize(model, full)))
    for i in range(copies):
        mujoco.mj_resetData(model, data)
        qpos_noise, qvel_noise = family.robot.reset_noise(rng, model.nq, model.nv)
        data.qpos[:] = initial_qpos(family.robot, model) + qpos_noise
        data.qvel[:] = qvel_noise
        mujoco.mj_getState(model, data, states[i], full)
    controls = rng.uniform(-1.0, 1.0, size=(copies, family.horizon * family.robot.frame_skip, model.nu))
    datas = [mujoco.MjData(model) for _ in range(threads)]
    with rollout.Rollout(nthread=threads) as pool:
        start = time.perf_counter()
        pool.rollout(model, datas, states, controls)
        return copies * family.horizon / (time.perf_counter() - start)


def sampling_row(name: str, batch_size: int | None, args: argparse.Namespace) -> SamplingRow:
    """Sampler and physics limit of one family, ``args.rounds`` rounds, each measuring both."""
    threads = os.cpu_count() or 1
    family = envs.make_family(name, threads=threads)
    family.preferred_batch_size = batch_size
    env = family.make_env()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (100, 100), "relu")
    params = stack_params(policy.init_params(), args.tasks)
    tasks = family.sample_tasks(args.tasks, np.random.default_rng(0))
    sampler = VectorSampler(family, policy, args.episodes, seed=0)
    sampler.sample(tasks, params, key=(0,))  # warm-up: simulators allocated, caches filled
    samples, limits, steps = [], [], 0
    for round_ in range(args.rounds):
        start = time.perf_counter()
        steps = sampler.sample(tasks, params, key=(1 + round_,)).num_steps
        samples.append(steps / (time.perf_counter() - start))
        limits.append(physics_limit(family, args.tasks * args.episodes, threads, seed=round_))
    ratios = [s / limit for s, limit in zip(samples, limits)]
    return SamplingRow(name, batch_size, steps, statistics.median(samples), statistics.median(limits),
                       statistics.median(ratios), (min(ratios), max(ratios)))


def iteration_times(args: argparse.Namespace) -> tuple[list[float], dict[str, float], int]:
    """Seconds per MAML TRPO meta-iteration of ``configs/halfcheetah-vel-maml.yaml`` (40 tasks x 20
    episodes), the median seconds of each phase and the env steps per iteration."""
    from metarl.experiment.trainer import MetaTrainer

    config = load_config(CONFIGS / "halfcheetah-vel-maml.yaml",
                         ["meta.batch_tasks=40", "meta.episodes_per_task=20"])
    trainer = MetaTrainer(config)
    trainer.step()  # warm-up
    times, records, before = [], [], trainer.env_steps
    for _ in range(args.iterations):
        start = time.perf_counter()
        records.append(trainer.step())
        times.append(time.perf_counter() - start)
    phases = {p: statistics.median(r[f"time_{p}_s"] for r in records) for p in PHASES}
    return times, phases, (trainer.env_steps - before) // args.iterations


def backend_rows(name: str, args: argparse.Namespace) -> list[tuple]:
    """Wall-clock env steps per second of one call through each ``sampler.kind`` (best of the rounds)."""
    rows, vector = [], float("nan")
    for kind in args.backends:
        for workers in ([1] if kind == "vector" else args.workers):
            config = validate({"env": {"family": name}, "policy": {"hidden_sizes": [100, 100]},
                               "sampler": {"kind": kind, "workers": workers}})
            family = build_family(config)
            policy = build_policy(config, family)
            params = stack_params(policy.init_params(), args.tasks)
            tasks = family.sample_tasks(args.tasks, np.random.default_rng(0))
            with build_sampler(config, family, policy, seed=0, episodes_per_task=args.episodes) as sampler:
                sampler.sample(tasks, params, key=(0,))
                best = 0.0
                for round_ in range(args.rounds):
                    start = time.perf_counter()
                    steps = sampler.sample(tasks, params, key=(1 + round_,)).num_steps
                    best = max(best, steps / (time.perf_counter() - start))
            vector = best if kind == "vector" else vector
            rows.append((name, kind, "" if kind == "vector" else workers, f"{best:,.0f}", f"{best / vector:.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of sampler and limit (the median is reported)")
    parser.add_argument("--iterations", type=int, default=5, help="timed meta-iterations (0: no second table)")
    parser.add_argument("--families", nargs="*", default=[f.name for f in LOCOMOTION_FAMILIES],
                        help="families of the first table (none: no first table)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[0],
                        help="copies per batched env (the sampler's chunks); 0: the family's default")
    parser.add_argument("--backends", nargs="*", default=[], choices=("vector", "subprocess", "ray"),
                        help="also compare these sampler back-ends")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts of subprocess and ray")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in args.families:
        default = envs.make_family(name).preferred_batch_size
        for size in args.batch_sizes:
            rows.append(sampling_row(name, size or default, args).cells())
            print(f"measured {name}, {size or default} copies per batched env", flush=True)
    if rows:
        print(f"\n{args.tasks} tasks x {args.episodes} episodes x horizon 200, 100x100 policy, {os.cpu_count()} "
              f"threads (MuJoCo's batch and rollout); env steps per wall-clock second, median of {args.rounds} rounds")
        print(format_table(["family", "copies per env", "env steps", "sampler", "physics limit", "ratio",
                            "ratio range"], rows))
    if args.iterations:
        times, phases, steps = iteration_times(args)
        print(f"\nMAML TRPO meta-iteration, HalfCheetahVel, 40 tasks x 20 episodes ({steps:,} env steps), "
              f"torch {torch.get_num_threads()} threads; seconds, median of {args.iterations}")
        print(format_table(["median", "best", *PHASES],
                           [(f"{statistics.median(times):.2f}", f"{min(times):.2f}",
                             *(f"{phases[p]:.2f}" for p in PHASES))]))
    if args.backends:
        table = [row for name in args.families for row in backend_rows(name, args)]
        print(f"\nback-ends: one call, env steps per wall-clock second (best of {args.rounds}, after a warm-up)")
        print(format_table(["family", "back-end", "workers", "steps/s", "speed-up"], table))


if __name__ == "__main__":
    main()
