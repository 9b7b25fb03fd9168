"""End to end: the trainer, evaluation and the ``metarl`` command on tiny navigation runs."""

import dataclasses
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import envs
from metarl.experiment.config import load_config, validate
from metarl.experiment.evaluation import EvaluationResult, evaluate, held_out_tasks
from metarl.experiment.trainer import MetaTrainer, NonFiniteError
from tests.helpers import ROOT, TINY, checkout_env


@pytest.mark.slow
def test_cli_help_and_the_package_load_torch_only_when_needed(run_metarl, tmp_path):
    """``metarl --help`` answers without importing torch (seconds); the package's API loads on use."""
    probe = ("import sys, metarl, metarl.cli\n"
             "assert 'torch' not in sys.modules, 'torch imported too early'\n"
             "assert 'MetaTrainer' in dir(metarl) and callable(metarl.MetaTrainer)\n"
             "assert 'torch' in sys.modules\n"
             "try:\n    metarl.nothing\nexcept AttributeError as e:\n    print(e)\n")
    probed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=checkout_env())
    assert probed.returncode == 0, probed.stderr
    assert "has no attribute 'nothing'" in probed.stdout
    result = run_metarl("--help", cwd=tmp_path)
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout
    version = run_metarl("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"metarl {importlib.metadata.version('metarl')}"


@pytest.mark.slow
def test_cli_train_then_evaluate_writes_the_run_directory(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    # Overrides before and after an option.
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY[:3], "--quiet", *TINY[3:],
                        f"run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mean return" in result.stdout and "stderr" in result.stdout
    assert ("held-out adaptation of navigation-maml (4 tasks drawn with seed 20171, 2 independent episodes per task "
            "and step):") in result.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for key in ("iteration", "env_steps", "return_pre", "return_post", "meta_grad_norm", "time_s"):
        assert all(key in r for r in records), key
    assert records[1]["env_steps"] > records[0]["env_steps"] > 0
    for r in records:
        phases = [r[f"time_{p}_s"] for p in ("sampling", "adaptation", "meta_gradient", "update")]
        assert all(t >= 0 for t in phases) and sum(phases) <= r["time_s"]
    assert load_config(run_dir / "config.yaml").train.iterations == 2
    assert set(torch.load(run_dir / "params.pt")) >= {"log_std"}
    assert records[0]["policy_std"] == pytest.approx(load_config(run_dir / "config.yaml").policy.init_std)
    assert records[1]["policy_std"] > 0
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["steps"] == [0, 1, 2] and evaluation["num_tasks"] == 4
    assert len(evaluation["mean_return"]) == len(evaluation["stderr"]) == 3
    per_task = torch.tensor(evaluation["task_returns"], dtype=torch.float64)  # steps x tasks
    assert per_task.shape == (3, 4)
    assert per_task.mean(1).tolist() == pytest.approx(evaluation["mean_return"], rel=1e-12)
    assert (per_task.std(1) / 2).tolist() == pytest.approx(evaluation["stderr"], rel=1e-12)

    at_end = (run_dir / "evaluation.json").read_text()
    assert (run_dir / "evaluation-4tasks-2steps-2episodes-seed20171.json").read_text() == at_end

    result = run_metarl("evaluate", str(run_dir), "--tasks", "5", "--steps", "1", "--seed", "99", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "evaluation-5tasks-1steps-2episodes-seed99.json" in result.stdout
    evaluation = json.loads((run_dir / "evaluation.json").read_text())  # the latest, what plot draws
    assert evaluation["steps"] == [0, 1] and evaluation["num_tasks"] == 5
    assert ((run_dir / "evaluation-5tasks-1steps-2episodes-seed99.json").read_text()
            == json.dumps(evaluation, indent=2) + "\n")
    assert (run_dir / "evaluation-4tasks-2steps-2episodes-seed20171.json").read_text() == at_end  # kept

    result = run_metarl("evaluate", str(run_dir), "--tasks", "3", "--steps", "1", "--protocol", "steps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(3 tasks drawn with seed 20171, 2 x horizon steps per task and step ('steps' protocol))" in result.stdout
    steps_protocol = EvaluationResult.load(run_dir / "evaluation-3tasks-1steps-2episodes-seed20171-stepsprotocol.json")
    assert steps_protocol.protocol == "steps" and steps_protocol.steps == [0, 1]
    result = run_metarl("evaluate", str(run_dir), "--tasks", "3", "--steps", "0", "--protocol", "workers",
                        "--workers", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 x horizon steps per task and step on 3 workers, episodes under way kept" in result.stdout
    assert EvaluationResult.load(run_dir / "evaluation-3tasks-0steps-2episodes-"
                                           "seed20171-3workersprotocol.json").workers == 3
    result = run_metarl("evaluate", str(run_dir), "--protocol", "workers", "--workers", "0", cwd=tmp_path)
    assert result.returncode != 0 and "evaluation.workers" in result.stderr and "Traceback" not in result.stderr
    result = run_metarl("evaluate", str(run_dir), "--workers", "3", cwd=tmp_path)
    assert result.returncode != 0 and "add --protocol workers" in result.stderr and "Traceback" not in result.stderr
    result = run_metarl("evaluate", str(run_dir), "--protocol", "samples", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'samples'" in result.stderr
    result = run_metarl("evaluate", str(run_dir), "--tasks", "2", "--steps", "0", "--task-set", "finn2017",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(the first 2 tasks of set 'finn2017', 2 independent episodes per task and step)" in result.stdout
    assert EvaluationResult.load(run_dir / "evaluation-2tasks-0steps-2episodes-"
                                           "seed20171-finn2017tasks.json").task_set == "finn2017"
    result = run_metarl("evaluate", str(run_dir), "--task-set", "finn2018", cwd=tmp_path)
    assert result.returncode == 2 and "has no task set 'finn2018'" in result.stderr
    result = run_metarl("evaluate", str(run_dir), "--tasks", "2", "--steps", "2", "--later-step-scale", "0.5",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "steps after the first at 0.5x" in result.stdout
    assert EvaluationResult.load(run_dir / "evaluation-2tasks-2steps-2episodes-"
                                           "seed20171-laterstep0.5.json").later_step_scale == 0.5
    result = run_metarl("evaluate", str(run_dir), "--later-step-scale", "0", cwd=tmp_path)
    assert result.returncode == 2 and "evaluation.later_step_scale" in result.stderr
    result = run_metarl("evaluate", str(run_dir), "--tasks", "2", "--steps", "1", "--first-step-scale", "0.5",
                        "--later-step-scale", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the first step at 0.5x, steps after the first at 0.5x" in result.stdout
    named = run_dir / "evaluation-2tasks-1steps-2episodes-seed20171-firststep0.5-laterstep0.5.json"
    assert EvaluationResult.load(named).first_step_scale == 0.5
    result = run_metarl("evaluate", str(run_dir), "--first-step-scale", "-1", cwd=tmp_path)
    assert result.returncode == 2 and "evaluation.first_step_scale" in result.stderr


@pytest.mark.slow
def test_cli_evaluates_runs_side_by_side_and_plots_them(run_metarl, tmp_path):
    runs = [tmp_path / "maml", tmp_path / "fomaml"]
    for run_dir, method in zip(runs, ("maml", "fomaml")):
        result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, f"meta.method={method}",
                            "evaluation.at_end=false", f"run.dir={run_dir}", "--quiet", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run_metarl("plot", *map(str, runs), "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert result.returncode == 2 and "no evaluation.json" in result.stderr and "metarl evaluate" in result.stderr

    result = run_metarl("evaluate", *map(str, runs), "--tasks", "3", "--steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, rule, *rows = result.stdout.strip().splitlines()[-4:]
    assert header.split() == ["steps", "maml", "fomaml"] and len(rows) == 2
    saved = {run.name: EvaluationResult.load(run / "evaluation.json") for run in runs}
    for row, k in zip(rows, (0, 1)):
        assert f"{saved['maml'].mean_return[k]:.2f} +/- {saved['maml'].stderr[k]:.2f}" in row
        assert f"{saved['fomaml'].mean_return[k]:.2f} +/- {saved['fomaml'].stderr[k]:.2f}" in row
    assert saved["maml"].seed == saved["fomaml"].seed  # the same held-out tasks

    result = run_metarl("plot", *map(str, runs), cwd=tmp_path)
    assert result.returncode == 2 and "give --out FILE for a figure of 2 runs" in result.stderr
    out = tmp_path / "adaptation.png"
    result = run_metarl("plot", *map(str, runs), "--out", str(out), "--title", "tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size(out) == (660, 480)
    result = run_metarl("plot", str(runs[0]), cwd=tmp_path)  # one run: its figure goes into its directory
    assert result.returncode == 0 and result.stdout.strip() == f"wrote {runs[0] / 'adaptation.png'}", result.stderr

    for x in ("iteration", "env_steps"):
        result = run_metarl("plot", *map(str, runs), "--curves", "--x", x, "--out", str(tmp_path / f"curves-{x}"),
                            cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert png_size(tmp_path / f"curves-{x}.png") == (1320, 864)  # 2 x 2 panels
    with (runs[1] / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"iteration": 2, "return_p')  # the half-written line of a run being killed
    result = run_metarl("plot", str(runs[1]), "--curves", cwd=tmp_path)
    assert result.returncode == 0 and (runs[1] / "curves.png").is_file(), result.stderr


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (its IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_run_names_label_runs_by_config_name_then_seed_then_directory(tmp_path):
    from metarl.cli import run_names

    def run(name: str, seed: int, directory: str) -> Path:
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "config.yaml").write_text(f"name: {name}\nseed: {seed}\n")
        return tmp_path / directory

    runs = [run("maml", 1, "a"), run("fomaml", 1, "b"), run("fomaml", 2, "c"), run("hf", 3, "d"), run("hf", 3, "e")]
    assert run_names([*runs, tmp_path / "missing"]) == [
        "maml", "fomaml seed 1", "fomaml seed 2", f"hf seed 3 ({runs[3]})", f"hf seed 3 ({runs[4]})",
        str(tmp_path / "missing")]


def test_evaluation_result_round_trips_and_rejects_damaged_files(tmp_path):
    result = EvaluationResult([0, 1], [-40.0, -20.0], [2.0, 1.0], num_tasks=4, seed=7, episodes_per_task=2)
    result.save(tmp_path / "evaluation.json")
    assert EvaluationResult.load(tmp_path / "evaluation.json") == result
    with_tasks = dataclasses.replace(result, task_returns=[[-41.0, -39.0, -40.0, -40.0], [-20.0] * 4])
    with_tasks.save(tmp_path / "tasks.json")
    assert EvaluationResult.load(tmp_path / "tasks.json") == with_tasks
    older = json.loads((tmp_path / "evaluation.json").read_text())
    del older["task_returns"]  # written before results kept per-task returns
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert EvaluationResult.load(tmp_path / "older.json") == result
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable evaluation result"):
        EvaluationResult.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_cli_default_run_dir_and_refusal_to_overwrite(run_metarl, tmp_path):
    result = run_metarl("train", str(ROOT / "configs/navigation-fomaml.yaml"), *TINY, "evaluation.at_end=false",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("navigation-fomaml-")
    again = run_metarl("train", str(ROOT / "configs/navigation-fomaml.yaml"), *TINY, f"run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr


@pytest.mark.slow
def test_cli_reports_config_errors_without_traceback(run_metarl, tmp_path):
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), "meta.inner_lr=-0.1", cwd=tmp_path)
    assert result.returncode == 2
    assert "meta.inner_lr = -0.1" in result.stderr and "Traceback" not in result.stderr
    result = run_metarl("evaluate", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "config.yaml is missing" in result.stderr


def test_same_seed_same_numbers(tiny):
    def run():
        trainer = MetaTrainer(tiny(meta={"method": "hfmaml"}))
        records = [trainer.step() for _ in range(2)]
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records], trainer.params

    (records_a, params_a), (records_b, params_b) = run(), run()
    assert records_a == records_b
    for k in params_a:
        assert torch.equal(params_a[k], params_b[k])


@pytest.mark.parametrize(
    "sections",
    [
        {"meta": {"method": "maml", "inner_steps": 2, "hessian_batch": "independent"}},
        {"meta": {"method": "hfmaml", "inner_steps": 2, "inner_step_rule": "inverse_steps"}},
        {"meta": {"method": "fomaml"}, "outer": {"kind": "sgd", "lr": 1e-4}},
        {"meta": {"method": "fomaml"}, "outer": {"kind": "adam", "anneal": True}},
        {"meta": {"method": "maml"}, "outer": {"kind": "adaptive_sgd", "smoothness": 10.0, "rho": 1.0}},
        {"meta": {"method": "fomaml"}, "outer": {"kind": "adaptive_sgd", "lipschitz": "online"}},
        {"meta": {"method": "maml"}, "surrogate": {"kind": "lvc", "normalize_advantages": True, "gae_lambda": 0.95}},
        {"meta": {"method": "maml"}, "surrogate": {"kind": "reinforce"}, "train": {"dtype": "float64"}},
    ],
)
def test_every_method_and_option_trains(tiny, sections):
    trainer = MetaTrainer(tiny(**sections))
    before = {k: v.clone() for k, v in trainer.params.items()}
    records = [trainer.step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(r["meta_grad_norm"])) for r in records)
    assert any(not torch.equal(before[k], trainer.params[k]) for k in before)
    result = evaluate(trainer.config, trainer.params, num_tasks=3, steps=1)
    assert len(result.mean_return) == 2


def test_adaptive_step_size_is_c_over_lipschitz_estimate(tiny):
    trainer = MetaTrainer(tiny(meta={"method": "hfmaml"},
                               outer={"kind": "adaptive_sgd", "smoothness": 2.0, "rho": 3.0}))
    record = trainer.step()
    grad_norm = record["lipschitz_estimate"] - 4 * 2.0
    assert grad_norm > 0
    assert record["step_size"] == pytest.approx((1 / 25) / record["lipschitz_estimate"])


def test_online_constants_drive_the_step_size_and_the_theory_delta_rule(tiny):
    trainer = MetaTrainer(tiny(meta={"method": "hfmaml", "hf_delta_rule": "theory"},
                               outer={"kind": "adaptive_sgd", "lipschitz": "online"}))
    first, second = trainer.step(), trainer.step()
    for record in (first, second):
        assert record["smoothness"] > 0 and record["rho"] > 0
        assert record["lipschitz_estimate"] > 4 * record["smoothness"]
        assert record["step_size"] == pytest.approx((1 / 25) / record["lipschitz_estimate"])
    assert second["smoothness"] >= first["smoothness"] and second["rho"] >= first["rho"]
    # Iteration 0 probed before its meta-gradient (for rho), then once per step: 3 independent draws,
    # each of 3 tasks x 2 episodes x 10 steps, on top of 2 draws (inner, outer) per meta-gradient.
    assert second["env_steps"] == 2 * 2 * 60 + 3 * 60


def test_non_finite_meta_gradient_is_skipped_logged_then_stops_the_run(tiny):
    trainer = MetaTrainer(tiny(outer={"max_nonfinite": 2}))
    trainer.params["log_std"].fill_(float("nan"))
    frozen = {k: v.clone() for k, v in trainer.params.items()}
    records = []
    with pytest.raises(NonFiniteError, match="2 iterations in a row"):
        trainer.train(iterations=5, on_metrics=records.append, progress=False)
    assert [(r["iteration"], r["skipped"]) for r in records] == [(0, True), (1, True)]
    for k in frozen:
        assert torch.equal(frozen[k], trainer.params[k]) or torch.isnan(frozen[k]).all()


def test_a_transient_nan_is_skipped_logged_and_training_goes_on(tiny, monkeypatch, capsys):
    import metarl.experiment.trainer as trainer_module

    real = trainer_module.estimate_meta_gradient

    def nan_at_iteration_one(*args, **kwargs):
        estimate = real(*args, **kwargs)
        if trainer.iteration == 1:
            estimate.direction = {k: torch.full_like(v, float("nan")) for k, v in estimate.direction.items()}
        return estimate

    monkeypatch.setattr(trainer_module, "estimate_meta_gradient", nan_at_iteration_one)
    trainer = MetaTrainer(tiny(outer={"max_nonfinite": 2}))
    records, params = [], []
    trainer.train(iterations=3, on_metrics=lambda r: (records.append(r), params.append(
        {k: v.clone() for k, v in trainer.params.items()})), progress=False)
    assert [r["skipped"] for r in records] == [False, True, False]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])  # no update at iteration 1
    assert any(not torch.equal(params[1][k], params[2][k]) for k in params[0])  # and training went on
    captured = capsys.readouterr()
    assert "iteration 1: NaN or Inf (meta-gradient or outer step), update skipped" in captured.out + captured.err


def test_evaluation_tasks_are_held_out_and_reproducible(tiny):
    config = tiny()
    trainer = MetaTrainer(config)
    a = evaluate(config, trainer.params, num_tasks=3, steps=1)
    b = evaluate(config, trainer.params, num_tasks=3, steps=1)
    c = evaluate(config, trainer.params, num_tasks=3, steps=1, seed=config.evaluation.seed + 1)
    assert a == b and a != c


def test_max_grad_norm_rescales_the_outer_step(tiny):
    trainer = MetaTrainer(tiny(outer={"kind": "sgd", "lr": 1.0, "max_grad_norm": 1e-3}))
    before = {k: v.clone() for k, v in trainer.params.items()}
    record = trainer.step()
    moved = torch.sqrt(sum(((trainer.params[k] - before[k]) ** 2).sum() for k in before))
    assert record["meta_grad_norm"] > 1e-3
    assert moved.item() == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.slow
def test_cli_errors_for_unusable_run_dirs_and_damaged_params(run_metarl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, f"run.dir={blocker}/run",
                        cwd=tmp_path)
    assert result.returncode == 2 and "Not a directory" in result.stderr and "Traceback" not in result.stderr
    result = run_metarl("evaluate", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr
    run_dir = tmp_path / "damaged"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 1\n")
    (run_dir / "params.pt").write_bytes(b"not a torch file")
    result = run_metarl("evaluate", str(run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "not a readable parameter file" in result.stderr


def test_runs_started_together_get_their_own_directories(tiny, tmp_path, monkeypatch):
    from metarl.experiment.run_dir import create_run_dir

    monkeypatch.chdir(tmp_path)
    config = tiny()
    dirs = {create_run_dir(config) for _ in range(3)}
    assert len(dirs) == 3 and all(d.is_dir() for d in dirs)


def test_evaluation_on_a_task_set_takes_its_first_tasks(tiny):
    config = tiny(evaluation={"task_set": "finn2017"})
    expected = envs.make_family("navigation2d").task_set("finn2017")
    tasks = held_out_tasks(config, 3, seed=5)
    assert [t["goal"].tolist() for t in tasks] == [t["goal"].tolist() for t in expected[:3]]
    assert (held_out_tasks(config, 3, seed=6)[0]["goal"].tolist()
            == tasks[0]["goal"].tolist())  # fixed, whatever the seed
    with pytest.raises(ValueError, match="task set 'finn2017' has 40 tasks"):
        held_out_tasks(config, 41, seed=5)
    result = evaluate(config, MetaTrainer(config).params, num_tasks=2, steps=0)
    assert result.task_set == "finn2017"


def test_later_step_scale_changes_the_returns_after_two_steps_only(tiny, tmp_path):
    from metarl.experiment.evaluation import save_evaluation

    sections = {"meta": {"inner_lr": 0.1}, "surrogate": {"per_step_units": True}}
    params = MetaTrainer(tiny(**sections)).params
    full = evaluate(tiny(**sections), params, num_tasks=3, steps=2)
    halved = evaluate(tiny(**sections, evaluation={"later_step_scale": 0.5}), params, num_tasks=3, steps=2)
    assert halved.mean_return[:2] == full.mean_return[:2] and halved.mean_return[2] != full.mean_return[2]
    assert (full.later_step_scale, halved.later_step_scale) == (1.0, 0.5)
    assert save_evaluation(halved, tmp_path).name == "evaluation-3tasks-2steps-2episodes-seed20171-laterstep0.5.json"
    with pytest.raises(ValueError, match="later_step_scale"):
        validate({"evaluation": {"later_step_scale": 0}})


def test_first_step_scale_changes_the_returns_after_one_step_and_keeps_old_files_fields(tiny, tmp_path):
    from metarl.experiment.evaluation import save_evaluation

    sections = {"meta": {"inner_lr": 0.1}, "surrogate": {"per_step_units": True}}
    params = MetaTrainer(tiny(**sections)).params
    full = evaluate(tiny(**sections), params, num_tasks=3, steps=1)
    halved = evaluate(tiny(**sections, evaluation={"first_step_scale": 0.5}), params, num_tasks=3, steps=1)
    assert halved.mean_return[0] == full.mean_return[0] and halved.mean_return[1] != full.mean_return[1]
    assert save_evaluation(halved, tmp_path).name == "evaluation-3tasks-1steps-2episodes-seed20171-firststep0.5.json"
    assert "first_step_scale" not in json.loads(save_evaluation(full, tmp_path).read_text())  # as files had before


def test_evaluation_checks_seed_and_parameter_shapes(tiny):
    config = tiny()
    trainer = MetaTrainer(config)
    with pytest.raises(ValueError, match="differs from the training seed"):
        evaluate(config, trainer.params, num_tasks=3, steps=1, seed=config.seed)
    wrong = {k: v[..., :1] if v.dim() > 1 else v for k, v in trainer.params.items()}
    with pytest.raises(ValueError, match="do not fit"):
        evaluate(config, wrong, num_tasks=3, steps=1)
    result = evaluate(config, trainer.params, num_tasks=3, steps=1)
    assert (result.seed, result.episodes_per_task) == (config.evaluation.seed, 2)


@pytest.mark.slow
def test_ctrl_c_saves_the_parameters_reached(interrupt_long_run):
    run_dir, returncode, stdout, stderr = interrupt_long_run("checkpoint.every=1", after_records=2)
    assert returncode == 130, stderr
    assert stdout.startswith(f"run directory: {run_dir}")  # announced before training
    assert "stopped by Ctrl-C after" in stderr and "Traceback" not in stderr
    assert f"metarl train --resume {run_dir}" in stderr
    assert set(torch.load(run_dir / "params.pt")) >= {"log_std"}


def test_progress_off_a_terminal_is_a_line_after_the_first_iteration_and_every_tenth_of_the_run(tiny, capsys):
    trainer = MetaTrainer(tiny(train={"iterations": 20}))
    trainer.train(progress=True)  # stderr is not a terminal under pytest: the bar is silent
    lines = [line for line in capsys.readouterr().out.splitlines() if " iterations done: " in line]
    assert [line.split(":")[0] for line in lines] == [f"{i}/20 iterations done" for i in (1, *range(2, 21, 2))]
    assert all("env steps/s" in line and "s left" in line for line in lines)
    MetaTrainer(tiny()).train(progress=False)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_plot_paths_draws_navigation_goals_before_and_after_adaptation(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    assert run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, "evaluation.at_end=false",
                      f"run.dir={run_dir}", "--quiet", cwd=tmp_path).returncode == 0
    result = run_metarl("plot", str(run_dir), "--paths", "--tasks", "3", "--steps", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"wrote {run_dir / 'paths.png'}: 3 held-out goals, 2 episodes each before "
                                     "adaptation and after 1..2 steps")  # TINY: 2 episodes per task and step
    assert png_size(run_dir / "paths.png") == (1152, 444)  # three panels in a row, a legend below
    result = run_metarl("plot", str(run_dir), str(run_dir), "--paths", cwd=tmp_path)
    assert result.returncode == 2 and "--paths draws one run" in result.stderr


@pytest.mark.slow
def test_video_shows_the_policy_before_and_after_adaptation(run_metarl, tmp_path):
    from PIL import Image

    run_dir = tmp_path / "run"
    assert run_metarl("train", str(ROOT / "configs/halfcheetah-dir-maml.yaml"), "train.iterations=0",
                      "evaluation.at_end=false", "env.kwargs={horizon: 10}", "evaluation.episodes_per_task=2",
                      "policy.hidden_sizes=[16]", "logging.wandb.mode=disabled", f"run.dir={run_dir}", "--quiet",
                      cwd=tmp_path).returncode == 0
    result = run_metarl("video", str(run_dir), "--task", "{direction: -1}", "--steps", "2", "--out",
                        str(tmp_path / "v"), cwd=tmp_path)
    if result.returncode != 0 and "cannot render" in result.stderr:
        pytest.skip(f"no OpenGL back-end here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert "before adaptation and after 1..2 steps on task {'direction': -1}" in result.stdout
    video = Image.open(tmp_path / "v.gif")
    assert video.size == (3 * 320, 240) and video.n_frames == 10 // 2 + 1  # the first frame, then every second step
    result = run_metarl("video", str(run_dir), "--task", "{direction: 2}", cwd=tmp_path)
    assert result.returncode == 2 and "direction" in result.stderr
    result = run_metarl("video", str(run_dir), "--task-seed", "1", "--out", str(tmp_path / "v.mp4"), cwd=tmp_path)
    assert result.returncode == 2 and "give a .gif file" in result.stderr


def test_picture_commands_check_their_numbers(run_metarl, tmp_path):
    for args in (["plot", "run", "--paths", "--steps", "0"], ["plot", "run", "--paths", "--tasks", "-1"],
                 ["video", "run", "--task-seed", "1", "--steps", "x"]):
        result = run_metarl(*args, cwd=tmp_path)
        assert result.returncode == 2 and ("is below 1" in result.stderr or "is not an integer" in result.stderr), args
