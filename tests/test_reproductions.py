"""The reproduction scripts' qualitative claims, at a tiny size (scripts/ is not a package: loaded by path)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import SCRIPTS, load_script

mf = load_script("reproduce_matrix_factorization")
ms = load_script("reproduce_multistep")
PANEL_A, PANEL_B, PANEL_C = mf.PANELS


def final_norms(panel, setup, methods=mf.METHODS, seed: int = 0) -> dict[str, float]:
    return {m: mf.final_norm(mf.train(m, panel, setup, seed), 0.2) for m in methods}


@pytest.mark.slow
def test_fomaml_stalls_with_exact_gradients_and_dissimilar_tasks() -> None:
    panel, setup = dataclasses.replace(PANEL_A, iterations=150), mf.Setup(replicas=2)
    curves = {m: mf.train(m, panel, setup, seed=0) for m in mf.METHODS}
    norms = {m: mf.final_norm(curve, 0.2) for m, curve in curves.items()}
    assert norms["maml"] < 1e-2 * curves["maml"][0].mean()
    assert norms["fomaml"] > 10 * norms["maml"]
    assert norms["fomaml"] > 10 * norms["hfmaml"]


@pytest.mark.slow
def test_fomaml_gap_needs_dissimilar_tasks_with_noisy_gradients() -> None:
    setup = mf.Setup(replicas=4)
    similar = final_norms(dataclasses.replace(PANEL_B, iterations=300), setup, ("maml", "fomaml"))
    dissimilar = final_norms(dataclasses.replace(PANEL_C, iterations=300), setup, ("maml", "fomaml"))
    similar_ratio = similar["fomaml"] / similar["maml"]
    dissimilar_ratio = dissimilar["fomaml"] / dissimilar["maml"]
    assert 0.67 < similar_ratio < 1.5
    assert dissimilar_ratio > 3
    assert dissimilar_ratio > 2 * similar_ratio


def test_matrix_factorisation_run_is_deterministic_for_a_seed() -> None:
    panel, setup = dataclasses.replace(PANEL_C, iterations=5), mf.Setup(replicas=2)
    first = mf.train("hfmaml", panel, setup, seed=3)
    assert torch.equal(first, mf.train("hfmaml", panel, setup, seed=3))
    assert not torch.equal(first, mf.train("hfmaml", panel, setup, seed=4))


def test_exact_meta_gradient_is_zero_at_a_shared_task_solution() -> None:
    # One task repeated: x = g is a maximiser of J(x + alpha grad J(x)), so grad F = 0 there.
    g = torch.randn(1, 1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).expand(1, 3, 4)
    assert mf.exact_meta_gradient_norm(g[:, 0], g, 0.1).item() < 1e-12
    assert mf.exact_meta_gradient_norm(0.5 * g[:, 0], g, 0.1).item() > 1e-3


@pytest.mark.slow
def test_constant_inner_step_diverges_with_many_steps_where_inverse_steps_converges() -> None:
    setup = ms.Setup(iterations=60, replicas=3, steps=(8,))
    constant = ms.train("constant", 8, setup, seed=0)
    inverse = ms.train("inverse_steps", 8, setup, seed=0)
    assert torch.isinf(constant[-1]).any()
    assert torch.isfinite(inverse).all()
    assert inverse[-1].max() < 0.1 * inverse[0].median()
    table = ms.results_table({("constant", 8): constant, ("inverse_steps", 8): inverse}, setup)
    assert "diverged" in table.splitlines()[2] and "diverged" not in table.splitlines()[3]


def test_one_inner_step_is_the_same_under_both_rules() -> None:
    setup = ms.Setup(iterations=10, replicas=2, steps=(1,))
    assert torch.equal(ms.train("constant", 1, setup, seed=1), ms.train("inverse_steps", 1, setup, seed=1))


@pytest.mark.slow
def test_figures_are_written_even_with_diverged_runs(tmp_path: Path) -> None:
    setup = ms.Setup(iterations=5, replicas=2, steps=(1, 8))
    curves = {(rule, n): torch.tensor([[1.0, 1.0], [0.5, 0.4], [0.2, 0.1], [0.1, 0.05], [0.05, 0.02], [0.02, 0.01]],
                                      dtype=torch.float64) for rule in ms.RULES for n in setup.steps}
    curves[("constant", 8)][2:] = torch.inf
    ms.plot(curves, setup, tmp_path / "multistep.png")
    panels = tuple(dataclasses.replace(p, iterations=2) for p in mf.PANELS)
    mf.plot(mf.run(panels, mf.Setup(replicas=2), seed=0), panels, tmp_path / "mf.png")
    assert (tmp_path / "multistep.png").stat().st_size > 0 and (tmp_path / "mf.png").stat().st_size > 0


@pytest.mark.slow
def test_navigation_reproduction_trains_every_run_and_writes_the_page(tmp_path):
    """The MAML-RL reproduction at a tiny size: each run through the `metarl train` command, the
    page with the published row beside ours, the per-seed table and the plot; finished runs are
    reused when the script is started again."""
    import subprocess

    runs, out = tmp_path / "runs", tmp_path / "out"
    command = [sys.executable, str(SCRIPTS / "reproduce_maml_rl.py"), "--seeds", "1", "2", "--methods", "maml",
               "random", "oracle", "--jobs", "2", "--runs", str(runs), "--out", str(out), "--page", "tiny",
               "--half-first-step", "--set", "train.iterations=2", "meta.batch_tasks=2", "meta.episodes_per_task=2",
               "evaluation.tasks=3", "env.kwargs.horizon=10"]
    environment = {**__import__("os").environ, "PYTHONPATH": str(SCRIPTS.parent)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (out / "tiny.md").read_text()
    assert "| MAML |" in page and "-40.4 / -11.7 / -3.3 / -3.2" in page and "| oracle | 2 | published |" in page
    assert page.count("-40.4 / -11.7 / -3.3 / -3.2") == 3  # a table per evaluation
    # the oracle takes no step: its published evaluation stands for the half-step one, not evaluated again
    assert not list((runs / "oracle-seed1").glob("*firststep*")) and list((runs / "maml-seed1").glob("*firststep0.5*"))
    half = page.split("## Mean return on held-out tasks, published, every step at half")[1].split("##")[0]
    assert "| oracle |" in half
    assert ("## Mean return on held-out tasks, published" in page
            and "authors' 3 test tasks (task set `finn2017`)" in page)
    assert "## Mean return on held-out tasks, unbiased" in page
    assert "the steps after the first taken at 0.5 times the first" in page
    assert "(the paper's: 500 x 20 x 20)" in page
    for evaluation in ("", "-stepsprotocol-finn2017tasks-laterstep0.5"):
        assert (runs / "maml-seed2" / f"evaluation-3tasks-3steps-40episodes-seed20171{evaluation}.json").exists()
    assert (out / "tiny.png").stat().st_size > 0
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{m}-seed{s}" for m in ("maml", "random", "oracle")
                                                             for s in (1, 2))
    stamp = (runs / "maml-seed1" / "evaluation.json").stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert again.returncode == 0 and (runs / "maml-seed1" / "evaluation.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("family", ["navigation", "halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir"])
def test_published_evaluation_takes_later_steps_at_half_and_the_half_step_one_every_step(family):
    """The authors' results-commit test scripts take later steps at half the inner step on every family
    (the AntDir files hold that script's tasks); their February-April optimiser took every step at half."""
    maml = load_script("reproduce_maml_rl")
    published = maml.evaluation_settings(family, "published")
    assert (published["protocol"], published["task_set"]) == ("steps", "finn2017")
    assert (published["first_step_scale"], published["later_step_scale"]) == (1.0, 0.5)
    half = maml.evaluation_settings(family, maml.HALF_FIRST_STEP)
    assert (half["first_step_scale"], half["later_step_scale"]) == (0.5, 0.5)


@pytest.mark.slow
def test_locomotion_reproduction_writes_its_page_and_rejects_unknown_methods(tmp_path):
    import subprocess

    pytest.importorskip("mujoco")
    runs, out = tmp_path / "runs", tmp_path / "out"
    base = [sys.executable, str(SCRIPTS / "reproduce_maml_rl.py"), "--family", "halfcheetah-vel", "--seeds", "1",
            "--runs", str(runs), "--out", str(out), "--page", "tiny"]
    environment = {**__import__("os").environ, "PYTHONPATH": str(SCRIPTS.parent)}
    unknown = subprocess.run([*base, "--methods", "maml", "reptile"], capture_output=True, text=True,
                             env=environment, timeout=60)
    assert unknown.returncode == 2 and "invalid choice: 'reptile'" in unknown.stderr
    done = subprocess.run([*base, "--methods", "maml", "--set", "train.iterations=1", "meta.batch_tasks=2",
                           "meta.episodes_per_task=2", "evaluation.tasks=2", "evaluation.steps=1",
                           "env.kwargs.horizon=5", "policy.hidden_sizes=[8, 8]", "--half-first-step"],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (out / "tiny.md").read_text()
    assert page.startswith("# HalfCheetah velocity: MAML against Finn et al. (2017)")
    assert "1 meta-iterations of 2 tasks x 2 episodes" in page and "-129.5 / -78.6 / -66.6 / -60.8" in page
    assert "(the checkpoint of the authors' July 2017 test script: 475 x 40 x 10)" in page
    assert "env.kwargs.horizon=5 'policy.hidden_sizes=[8, 8]' --page tiny --half-first-step`" in page  # a shell command
    assert "## Mean return on held-out tasks, published, every step at half" in page and "--half-first-step`" in page
    assert "every step taken at half the inner step" in page and "evaluated 3 times" in page
    assert (runs / "maml-seed1" / "evaluation-2tasks-1steps-20episodes-seed20171-stepsprotocol-finn2017tasks"
            "-firststep0.5-laterstep0.5.json").exists()


@pytest.mark.slow
def test_reproduction_resumes_a_run_stopped_after_a_checkpoint(tmp_path):
    """A run directory with a checkpoint but no finished record continues from the checkpoint
    (here: trained further than it was planned) and ends where an uninterrupted run ends."""
    import os
    import subprocess

    tiny = ["meta.batch_tasks=2", "meta.episodes_per_task=2", "evaluation.tasks=2", "evaluation.steps=1",
            "env.kwargs.horizon=10"]
    environment = {**os.environ, "PYTHONPATH": str(SCRIPTS.parent)}

    def reproduce(runs: Path) -> None:
        command = [sys.executable, str(SCRIPTS / "reproduce_maml_rl.py"), "--seeds", "1", "--methods", "maml",
                   "--jobs", "1", "--runs", str(runs), "--out", str(tmp_path / "out"), "--page", "tiny",
                   "--set", "train.iterations=4", *tiny]
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    stopped = tmp_path / "stopped" / "maml-seed1"
    first = subprocess.run([sys.executable, "-m", "metarl", "train",
                            str(SCRIPTS.parent / "configs/navigation-maml.yaml"),
                            "seed=1", f"run.dir={stopped}", "train.threads=1", "logging.wandb.mode=disabled",
                            "train.iterations=2", *tiny, "--quiet"],
                           capture_output=True, text=True, env=environment, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoint = stopped / "checkpoints" / "checkpoint-00000002.pt"
    stamp = checkpoint.stat().st_mtime_ns
    reproduce(stopped.parent)
    reproduce(tmp_path / "uninterrupted")
    assert checkpoint.stat().st_mtime_ns == stamp  # continued, not started again
    assert len((stopped / "metrics.jsonl").read_text().splitlines()) == 4
    resumed = torch.load(stopped / "params.pt")
    straight = torch.load(tmp_path / "uninterrupted" / "maml-seed1" / "params.pt")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)
