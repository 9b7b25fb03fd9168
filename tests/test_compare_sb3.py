"""scripts/compare_sb3.py: SB3 PPO from scratch against one adaptation step, at a tiny size."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from metarl.experiment.build import build_family, build_policy, build_sampler
from metarl.experiment.config import load_config
from metarl.experiment.evaluation import evaluate
from metarl.experiment.metrics import read_metrics
from metarl.experiment.run_dir import PARAMS_FILE, load_params
from metarl.integrations.sb3 import to_sb3
from tests.helpers import ROOT, SCRIPTS, TINY, checkout_env, load_script

pytest.importorskip("stable_baselines3", reason='stable-baselines3 is not installed: pip install -e ".[sb3]"')
compare_sb3 = load_script("compare_sb3")
SMALL_PPO = compare_sb3.PPOSettings(n_steps=64, batch_size=32, n_epochs=2)


@pytest.fixture(scope="module")
def run_dir(run_metarl, tmp_path_factory):
    """A navigation MAML run of two meta-iterations (horizon 10), trained by `metarl train`."""
    tmp = tmp_path_factory.mktemp("compare")
    run_dir = tmp / "run"
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, "policy.hidden_sizes=[8]",
                        "evaluation.at_end=false", f"run.dir={run_dir}", "--quiet", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow
def test_script_writes_the_page_and_reuses_ppo_curves(run_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [sys.executable, str(SCRIPTS / "compare_sb3.py"), str(run_dir), "--tasks", "2", "--budget", "100",
               "--seeds", "0", "1", "--n-steps", "64", "--batch-size", "32", "--n-epochs", "2", "--eval-episodes", "4",
               "--out", str(out), "--cache", str(cache), "--page", "tiny"]
    done = subprocess.run(command, capture_output=True, text=True, env=checkout_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (out / "tiny.md").read_text()
    assert (out / "tiny.png").stat().st_size > 0
    task_rows = [line for line in page.splitlines() if line.startswith(("| 0 | goal", "| 1 | goal", "| 2 |"))]
    assert len(task_rows) == 2 and "PPO env steps (seed 0) | PPO env steps (seed 1)" in page
    assert "for 128 env steps" in page  # 100 rounded up to two rollouts of 64
    # The targets are metarl evaluate's numbers on the same held-out tasks.
    config = load_config(run_dir / "config.yaml")
    result = evaluate(config, load_params(run_dir / PARAMS_FILE), num_tasks=2, steps=1)
    assert f"| meta-learned, 0 steps | {result.mean_return[0]:.2f} | 0 |" in page
    assert f"| meta-learned, 1 step | {result.mean_return[1]:.2f} | 20 | 1x |" in page  # 2 episodes x horizon 10
    meta_training = read_metrics(run_dir / "metrics.jsonl")[-1]["env_steps"]
    assert f"Meta-training itself took {meta_training:,} env steps (2 meta-iterations" in page
    assert len(list(cache.glob("ppo-*.json"))) == 4
    stamps = {path: path.stat().st_mtime_ns for path in cache.glob("ppo-*.json")}
    again = subprocess.run(command, capture_output=True, text=True, env=checkout_env(), timeout=120)
    assert again.returncode == 0 and (out / "tiny.md").read_text() == page
    assert {path: path.stat().st_mtime_ns for path in cache.glob("ppo-*.json")} == stamps


def test_steps_to_reach_is_the_first_evaluation_at_or_above_the_target():
    curve = compare_sb3.Curve([0, 64, 128], [-5.0, -3.0, -4.0], seconds=1.0)
    assert compare_sb3.steps_to_reach(curve, -5.0) == 0
    assert compare_sb3.steps_to_reach(curve, -3.5) == 64
    assert compare_sb3.steps_to_reach(curve, -2.0) is None


def test_trivial_and_unreachable_targets_on_a_trained_curve(run_dir):
    """PPO evaluated before its first update and after each one; a target below every return is reached
    at the first evaluation, one above any navigation return (rewards are minus a distance) never."""
    config = load_config(run_dir / "config.yaml")
    family = build_family(config)
    task = {"goal": np.array([0.3, -0.2])}
    policy_kwargs = compare_sb3.sb3_policy_kwargs(build_policy(config, family))
    curve = compare_sb3.train_ppo(family, task, SMALL_PPO, policy_kwargs, budget=128, eval_episodes=4, seed=0)
    assert curve.steps == [0, 64, 128] and all(r < 0 for r in curve.returns)
    meta = compare_sb3.MetaReturns(before=[-50.0, -50.0], after=[-1e9, 0.0], adaptation_steps=[40, 40])
    comparison = compare_sb3.Comparison(config, run_dir, [task, task], meta, {(0, 0): curve, (1, 0): curve}, [0],
                                        128, SMALL_PPO, policy_kwargs, 4)
    assert comparison.reached(0, 0) == 0 and comparison.reached(1, 0) is None
    rows = compare_sb3.task_table(comparison).splitlines()
    assert rows[2].split(" | ")[5:] == ["0", "0.0x |"]
    assert rows[3].split(" | ")[5:] == ["> 128", "> 3x |"]
    summary = compare_sb3.summary_table(comparison)
    assert "median |  | > 128 |" in summary and "mean |  | > 64 |" in summary and "| 1 of 2 |" in summary


def test_ppo_evaluation_measures_what_metarl_evaluation_measures(run_dir):
    """The same policy (metarl's parameters exported to SB3) gets the same mean return of sampled
    episodes from the script's PPO evaluation and from metarl's sampler, within the sampling error."""
    config = load_config(run_dir / "config.yaml")
    family = build_family(config)
    policy, params = build_policy(config, family), load_params(run_dir / PARAMS_FILE)
    task, episodes = {"goal": np.array([0.3, -0.2])}, 400
    model = to_sb3(policy, params, family.make_env(task), seed=0)
    ppo = compare_sb3.sampled_returns(model, family.make_batched([task] * episodes), np.random.default_rng(0))
    sampled = build_sampler(config, family, policy, 0, episodes).sample([task], params, key=(0,))
    metarl_returns = sampled.episode_returns()[0].double()
    difference = np.mean(ppo) - metarl_returns.mean().item()
    stderr = np.sqrt(np.var(ppo) / episodes + metarl_returns.var().item() / episodes)
    assert abs(difference) < 4 * stderr, (difference, stderr)
    assert torch.isfinite(metarl_returns).all() and np.std(ppo) > 0
