"""The diagnosis scripts run end to end on a tiny run and print what they promise."""

import re
import subprocess
import sys

import pytest
import torch

from metarl.experiment.config import dump_config
from metarl.experiment.trainer import run_training
from tests.helpers import ROOT, checkout_env, load_script


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300, env=checkout_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_inner_step_sweep_and_meta_gradient_parts(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}), progress=False)
    page = tmp_path / "sweep.md"
    out = script("inner_step_sweep.py", str(run_dir), "--inner-lr", "0.1", "1", "--episodes", "2", "--tasks", "3",
                 "--out", str(page))
    rows = [line for line in page.read_text().splitlines() if line.startswith("| 0.1 |") or line.startswith("| 1 |")]
    assert len(rows) == 2 and "inner_step_sweep.py" in page.read_text() and "| gain |" in out
    before = {row.split("|")[3] for row in rows}
    assert len(before) == 1  # the same rollouts before the step, whatever its size
    out = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3")
    assert re.fullmatch(r"3 tasks: first-order part \S+, second-order part \S+ \(\S+x\), cosine\(MAML, first-order\) "
                        r"-?[0-9.]+\n", out), out
    single = out
    out = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3", "--batches", "3", "--out",
                 str(tmp_path / "p.md"))
    assert (f"## `python scripts/meta_gradient_parts.py {run_dir} --tasks 3 --batches 3 --out"
            in (tmp_path / "p.md").read_text())
    assert out.strip() in (tmp_path / "p.md").read_text()
    lines = out.splitlines()
    assert lines[0] == single.strip() and "3 independent batches" in out  # batch 0: the same rollouts
    rows = {cells[1].strip(): cells[2:4] for cells in (line.split("|") for line in lines) if len(cells) == 5}
    cosines = [float(rows[part][1]) for part in ("first-order", "second-order", "MAML")]
    assert all(-1 <= c < 1 for c in cosines), out  # independent batches differ
    shares = [float(line.split("|")[2]) for line in lines[lines.index("| --- | --- |") + 1:]]
    assert len(shares) >= 2 and abs(sum(shares) - 1) < 1e-3, out
    other = tmp_path / "other.pt"
    torch.save({k: torch.zeros_like(v) for k, v in torch.load(run_dir / "params.pt").items()}, other)
    elsewhere = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3", "--params", str(other))
    assert elsewhere != single  # estimated at the given parameters


@pytest.mark.slow
def test_hf_maml_finite_difference_matches_the_exact_product_for_a_smooth_policy(tiny, tmp_path):
    """On a tanh policy HF-MAML's central difference is the exact product up to O(delta^2) (float64), and its
    second-order part of the meta-gradient is MAML's; on a ReLU policy the difference sees the kinks the exact
    product does not, in either precision. The scripts say so and write their page."""
    run_dir = tmp_path / "run"
    config = tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}, policy={"activation": "tanh"})
    run_training(config, progress=False)
    page = tmp_path / "fd.md"
    out = script("finite_difference_hvp.py", str(run_dir), "--tasks", "3", "--deltas", "0.01", "0.001", "--out",
                 str(page))
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 0.0")]
    float64 = {cells[1].strip(): float(cells[3]) for cells in rows}
    assert float64["0.001"] < 1e-5 and 50 < float64["0.01"] / float64["0.001"] < 200, out  # O(delta^2)
    assert out.strip() in page.read_text() and "# HF-MAML's finite difference" in page.read_text()
    out = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3", "--hfmaml", "--set", "meta.hf_delta=0.001")
    cosine = float(re.search(r"same rollouts \(1 batches\): cosine (\S+),", out).group(1))
    assert cosine > 0.999, out
    out = script("finite_difference_hvp.py", str(run_dir), "--tasks", "3", "--deltas", "0.1", "--set",
                 "policy.activation=relu")
    (cells,) = [line.split("|") for line in out.splitlines() if line.startswith("| 0.1 ")]
    assert float(cells[2]) > 0.1 and float(cells[2]) == pytest.approx(float(cells[3]), rel=1e-2), out


def test_meta_gradient_parts_refuses_an_independent_hessian_batch(tiny, tmp_path):
    """The parts are differences on the same rollouts; an independent Hessian batch would draw other ones."""
    (tmp_path / "config.yaml").write_text(dump_config(tiny()))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "meta_gradient_parts.py"), str(tmp_path), "--set",
                           "meta.hessian_batch=independent"], capture_output=True, text=True, timeout=120,
                          env=checkout_env())
    assert done.returncode == 2 and "needs meta.hessian_batch=shared" in done.stderr, done.stderr


def test_meta_gradient_parts_names_the_collection_of_its_batches(tiny):
    module = load_script("meta_gradient_parts")
    meta = tiny().meta
    assert module.collection_label(meta) == f"{meta.episodes_per_task} episodes per task"
    workers = meta.model_copy(update={"protocol": "workers", "workers": 8, "episodes_per_task": 20})
    assert module.collection_label(workers) == ("a budget of 20 horizons of steps per task ('workers' collection "
                                                "on 8 workers)")


@pytest.mark.slow
def test_trpo_finite_difference_compares_finn_et_al_s_product_with_the_exact_one(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}), progress=False)
    page = tmp_path / "page.md"
    out = script("trpo_finite_difference.py", str(run_dir), "--exact", "--iterations", "1", "2", "--out", str(page))
    assert (out.strip() in page.read_text(encoding="utf-8")
            and "--iterations 1 2 --out" in page.read_text(encoding="utf-8"))
    assert "| meta-batch | ‖g‖ | product |" in out  # no bare || to split the markdown cells
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[2:]]
    assert [(row[0], row[2]) for row in rows] == [("1", "finite difference, float32"), ("1", "exact"),
                                                  ("2", "finite difference, float32"), ("2", "exact")], out
    for _, norm, name, cos, ratio, curvature, moved in rows:
        assert -1 <= float(cos) <= 1 and float(ratio) > 0 and float(curvature) > 0 and float(norm) > 0
        shares = [float(s) for s in moved.split(",")] if name != "exact" else []
        assert (1 <= len(shares) <= 11 if name != "exact" else not shares) and all(0 <= s <= 1 for s in shares), out
    assert rows[0][3:6] != rows[1][3:6]  # the finite difference in float32 is not the exact product
    tiny_eps = script("trpo_finite_difference.py", str(run_dir), "--exact", "--iterations", "1", "--base-eps", "1e-8")
    fd, exact = ([cell.strip() for cell in line.split("|")[1:-1]] for line in tiny_eps.splitlines()[2:])
    assert fd[3:6] != rows[0][3:6], tiny_eps  # the product depends on eps
    assert exact[3:6] == rows[1][3:6]  # the exact one does not


def _result_file(path, task_rows) -> None:
    """A result file in the authors' layout (protocol-0 pickle of plain lists): steps x tasks."""
    import pickle

    path.write_bytes(pickle.dumps({"task_avg_returns": [list(step) for step in zip(*task_rows)]}, protocol=0))


def test_finn2017_result_files_counts_distinct_rows_splits_directions_and_sets_our_gains_beside(tmp_path):
    pytest.importorskip("mujoco")
    from envs import make_family
    from metarl.experiment.config import load_config
    from metarl.experiment.evaluation import EvaluationResult, evaluation_path

    signs = [task["direction"] for task in make_family("halfcheetah_dir").task_set("finn2017")]
    icml = tmp_path / "maml_rl" / "icml"
    icml.mkdir(parents=True)
    # Two runs, one per direction, repeated for every task: the authors' direction controls.
    _result_file(icml / "icml_cheetahdirec_results_random.pkl",
                 [[-40.0, 30.0, 40.0, 50.0] if s > 0 else [-30.0, 10.0, 70.0, 110.0] for s in signs])
    _result_file(icml / "icml_cheetah_results_maml.pkl", [[-130.0 + i, -80.0 + i, -70.0, -60.0] for i in range(40)])
    # One set of rollouts (velocities 0.3, 0.9, 1.5 for a third of the 200 steps each) scored against every goal.
    goals = [task["velocity"] for task in make_family("halfcheetah_vel").task_set("finn2017")]
    _result_file(icml / "icml_cheetah_results_random.pkl",
                 [[-200 / 3 * sum(abs(v - g) for v in (0.3, 0.9, 1.5)), -100.0, -90.0, -80.0] for g in goals])
    run = tmp_path / "random-seed1"
    run.mkdir()
    config = load_config(ROOT / "configs" / "halfcheetah-dir-random.yaml")
    (run / "config.yaml").write_text(dump_config(config))  # a run directory holds the resolved config
    gains = [10.0 * (i % 5) if s > 0 else 20.0 + (i % 3) for i, s in enumerate(signs)]
    EvaluationResult([0, 1, 2, 3], [0.0] * 4, [0.0] * 4, 40, config.evaluation.seed, 20, "steps", "finn2017", 0.5,
                     [[-40.0] * 40, [-40.0 + g for g in gains], [0.0] * 40, [0.0] * 40]).save(
        evaluation_path(run, num_tasks=40, steps=3, episodes_per_task=20, seed=config.evaluation.seed,
                        protocol="steps", task_set="finn2017", later_step_scale=0.5))
    page = tmp_path / "files.md"
    out = script("finn2017_result_files.py", str(tmp_path / "maml_rl"), "--runs", str(run), "--out", str(page))
    assert out.strip() in page.read_text() and "scripts/finn2017_result_files.py" in page.read_text()
    rows = {cells[1].strip(): [c.strip() for c in cells[2:-1]]
            for cells in (line.split("|") for line in out.splitlines()) if len(cells) > 5}
    forward, backward = sum(s > 0 for s in signs), sum(s < 0 for s in signs)
    expected = [(-40.0 * forward - 30.0 * backward) / 40, (30.0 * forward + 10.0 * backward) / 40]
    assert rows["icml_cheetahdirec_results_random.pkl"][:2] == ["40", "2"]
    assert rows["icml_cheetahdirec_results_random.pkl"][2].startswith(f"{expected[0]:.1f} / {expected[1]:.1f} / ")
    assert rows["icml_cheetahdirec_results_random.pkl"][3:5] == ["-40.0 / 30.0 / 40.0 / 50.0",
                                                                 "-30.0 / 10.0 / 70.0 / 110.0"]
    assert rows["icml_cheetah_results_maml.pkl"][:2] == ["40", "40"] and rows["icml_cheetah_results_maml.pkl"][3] == ""
    assert rows["icml_cheetah_results_maml.pkl"][-1] == "no" and rows["icml_cheetah_results_random.pkl"][-1] == "yes"
    assert rows["icml_cheetahdirec_results_random.pkl"][-1] == ""
    ours_forward = [g for g, s in zip(gains, signs) if s > 0]
    spread = torch.tensor(ours_forward).std().item()
    mean = sum(ours_forward) / forward
    assert (f"| random | forward | {forward} | -40.0 / {mean - 40:.1f} | {mean:.1f} | {spread:.1f} | "
            f"{min(ours_forward):.1f} .. {max(ours_forward):.1f} | random | -40.0 / 30.0 | 70.0 | "
            f"{(70.0 - mean) / spread:+.1f} | 0.00 |") in out
    assert f"| random | backward | {backward} | " in out and "| 40.0 |" in out


@pytest.mark.slow
def test_finn2017_result_files_refuses_crafted_and_damaged_files(tmp_path):
    icml = tmp_path / "icml"
    icml.mkdir()
    marker = tmp_path / "ran"
    # A pickle that would call os.system when loaded by pickle.load.
    (icml / "icml_cheetah_results_maml.pkl").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "finn2017_result_files.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=checkout_env())
    assert done.returncode != 0 and not marker.exists()
    assert "icml_cheetah_results_maml.pkl is not one of the authors' result files: refused os.system" in done.stderr
    assert "Traceback" not in done.stderr
    (icml / "icml_cheetah_results_maml.pkl").write_bytes(b"(dp0\nS'task_avg")  # truncated
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "finn2017_result_files.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=checkout_env())
    assert done.returncode != 0 and "is not one of the authors' result files" in done.stderr


def test_training_curves_sets_an_rllab_progress_file_beside_our_runs(tmp_path, capsys):
    import json

    curves = load_script("training_curves")
    run = tmp_path / "maml-seed1"
    run.mkdir()
    records = [{"iteration": i, "return_pre": -10.0 + i, "return_post": -5.0 + 2 * i} for i in range(5)]
    records.append({"iteration": 4, "return_pre": 0.0, "return_post": 10.0})  # resumed: the last record counts
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    progress = tmp_path / "progress.csv"
    progress.write_text("Iteration,0AverageReturn,1AverageReturn\n"
                        + "".join(f"{i},{-40 + i},{-20 + 3 * i}\n" for i in range(4)))
    out = tmp_path / "page.md"
    curves.main([str(run), "--progress", f"theirs={progress}", "--window", "2", "--out", str(out), "--plot",
                 "--title", "Ours and theirs"])
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert lines[0] == ("| iterations | maml-seed1: after 1 step | maml-seed1: gain | theirs: after 1 step | "
                        "theirs: gain |")
    # our posts -5, -3 | -1, 1 (gains 5, 6 | 7, 8); theirs -20, -17 | -14, -11 (gains 20, 22 | 24, 26); 4 iterations
    assert lines[2:] == ["| 0-1 | -4.0 | 5.5 | -18.5 | 21.0 |", "| 2-3 | 0.0 | 7.5 | -12.5 | 25.0 |"]
    page = out.read_text()
    assert printed.strip() in page and (tmp_path / "page.png").stat().st_size > 0
    assert page.startswith("# Ours and theirs\n") and "--title 'Ours and theirs'`" in page  # the command, quoted
    assert f"* theirs: rllab log `{progress}`\n" in page
    curves.main([str(run), "--progress", f"theirs={progress}", "--window", "5", "--all"])
    assert "| 0-4 | 0.4 | 7.2 | -15.5 | 23.0 |" in capsys.readouterr().out  # the longest curve: all of ours
    curves.main([str(run), "--progress", f"theirs={progress}", "--window", "3"])
    assert capsys.readouterr().out.splitlines()[-1] == "| 3-3 | 1.0 | 8.0 | -11.0 | 26.0 |"  # none beyond the 4th
    bad = tmp_path / "bad.csv"
    bad.write_text("Iteration,AverageReturn\n0,1\n")
    with pytest.raises(SystemExit, match="no column 0AverageReturn, 1AverageReturn"):
        curves.main(["--progress", f"x={bad}"])


@pytest.mark.slow
def test_baseline_ridge_compares_the_two_fits_on_a_runs_rollouts(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}), progress=False)
    out = script("baseline_ridge.py", str(run_dir), "--tasks", "3")
    cells = [cell.strip() for cell in out.splitlines()[2].split("|")[1:-1]]
    assert cells[:2] == [f"`{run_dir}`", "3"], out
    relative, absolute, difference = map(float, cells[2:])
    # the absolute ridge (1e-5) is the smaller one here, so its in-sample fit explains at least as much
    assert 0 < relative <= absolute <= 1 and difference > 0, out


@pytest.mark.slow
def test_trpo_metric_tasks_compares_subsampled_metrics_with_the_full_one(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, outer={"kind": "trpo", "metric": "adapted"},
                      evaluation={"at_end": False}), progress=False)
    out = script("trpo_metric_tasks.py", str(run_dir), "--tasks", "1", "2", "--out", str(tmp_path / "page.md"))
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["1", "3 (all)"], ["1", "2"], ["1", "1"]], out
    for _, _, cos, efficiency, seconds in rows[1:]:
        # a tiny metric can build and solve in under 5 ms: the seconds column is only checked to parse
        assert -1 <= float(cos) < 0.9999 and float(efficiency) > 0 and float(seconds) >= 0, out
    assert out.strip() in (tmp_path / "page.md").read_text()
    plain = tmp_path / "plain"
    run_training(tiny(run={"dir": str(plain)}, evaluation={"at_end": False}), progress=False)
    failed = subprocess.run([sys.executable, str(ROOT / "scripts/trpo_metric_tasks.py"), str(plain)],
                            capture_output=True, text=True, timeout=300, env=checkout_env())
    assert failed.returncode == 2 and "the metric is TRPO's" in failed.stderr


@pytest.mark.slow
def test_benchmark_trpo_metric_times_chunked_products_that_equal_the_one_graph_product(tiny, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(tiny(outer={"kind": "trpo", "metric": "adapted"})))
    out = script("benchmark_trpo_metric.py", str(config), "--chunks", "2", "1", "--products", "2", "--repeats", "1")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[3:]]
    assert [row[0] for row in rows] == ["3 (one graph)", "2", "1"], out
    assert rows[0][3:] == ["1.00", "0.0e+00"], out
    for _, build, per_product, speed_up, difference in rows:
        assert float(build) >= 0 and float(per_product) >= 0 and float(speed_up) > 0, out
        assert float(difference) < 1e-5, out  # the same product: float32 rounding only


@pytest.mark.slow
def test_finn2017_result_files_reads_an_earlier_commit(tmp_path):
    repository = tmp_path / "maml_rl"
    (repository / "icml").mkdir(parents=True)
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    commits = []
    for value in (1.0, 2.0):
        _result_file(repository / "icml" / "icml_point_results_maml.pkl", [[value, value + 1]] * 40)
        subprocess.run([*git, "add", "icml"], check=True)
        subprocess.run([*git, "commit", "-qm", str(value)], check=True)
        commits.append(subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
    for path in (repository, repository / ".git"):  # a work tree, or the git directory itself
        assert "| 1.0 / 2.0 |" in script("finn2017_result_files.py", str(path), "--commit", commits[0])
    assert "| 2.0 / 3.0 |" in script("finn2017_result_files.py", str(repository))
