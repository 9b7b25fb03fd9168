"""Sampling throughput on the locomotion families: the metarl sampler against raw env stepping.

For every family, in one process with one torch thread, in environment steps per second:

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

    python scripts/benchmark_sampling.py [--tasks 20] [--episodes 20] [--horizon 200] [--raw-steps 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.locomotion import LOCOMOTION_FAMILIES, LocomotionFamily
from metarl.logging import format_table
from metarl.oracles import stack_params
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import VectorSampler


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--raw-steps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (the best is reported)")
    parser.add_argument("--families", nargs="+", default=[f.name for f in LOCOMOTION_FAMILIES])
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
