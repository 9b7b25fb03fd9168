"""What a run promises under signals, races, damaged files and divergence (docs/reliability.md)."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from metarl.cli import main
from metarl.experiment.checkpoint import list_checkpoints
from metarl.experiment.config import dump_config
from metarl.experiment.metrics import read_metrics
from metarl.experiment.run_dir import PARAMS_FILE, lock_holder, save_params
from metarl.experiment.trainer import MetaTrainer, NonFiniteError, run_training
from tests.helpers import ROOT, TINY, checkout_env, processes_with_env, still_running, without_times

CONFIG = str(ROOT / "configs/navigation-maml.yaml")
ITERATIONS = 30
RUN = [arg for arg in TINY if not arg.startswith("train.iterations")] + [
    f"train.iterations={ITERATIONS}", "evaluation.at_end=false", "--quiet"]


def train_process(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metarl", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or checkout_env(), **popen)


def wait_for(condition, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def records(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_checkpoints_the_last_iteration_and_resume_equals_an_uninterrupted_run(interrupt_training, run_metarl,
                                                                                       tmp_path):
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    # checkpoint.every beyond the run: the only checkpoint is the one the signal makes
    returncode, _, stderr = interrupt_training([CONFIG, *RUN, "checkpoint.every=1000", f"run.dir={stopped}"], stopped,
                                               after_records=5, sig=signal.SIGTERM, cwd=tmp_path)
    assert returncode == 143, stderr
    assert "stopped by SIGTERM after" in stderr and "Traceback" not in stderr
    assert f"metarl train --resume {stopped}" in stderr
    [(iteration, _)] = list_checkpoints(stopped)
    assert 5 <= iteration < ITERATIONS
    saved = torch.load(stopped / PARAMS_FILE)
    checkpointed = torch.load(list_checkpoints(stopped)[0][1])["params"]
    assert all(torch.equal(saved[k], checkpointed[k]) for k in saved)  # params.pt is the checkpoint's

    assert run_metarl("train", "--resume", str(stopped), "--quiet", cwd=tmp_path).returncode == 0
    assert run_metarl("train", CONFIG, *RUN, "checkpoint.every=1000", f"run.dir={whole}", cwd=tmp_path).returncode == 0
    assert (without_times(read_metrics(stopped / "metrics.jsonl"))
            == without_times(read_metrics(whole / "metrics.jsonl")))
    final_stopped, final_whole = torch.load(stopped / PARAMS_FILE), torch.load(whole / PARAMS_FILE)
    assert all(torch.equal(final_stopped[k], final_whole[k]) for k in final_whole)


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_a_run_with_sampler_workers(tmp_path):
    """As SLURM signals a job step: every process gets SIGTERM; the workers leave it to the main process."""
    marker = uuid.uuid4().hex
    run_dir = tmp_path / "run"
    endless = [arg for arg in RUN if not arg.startswith("train.iterations")] + ["train.iterations=100000"]
    process = train_process(CONFIG, *endless, "sampler.kind=subprocess", "checkpoint.every=1000", f"run.dir={run_dir}",
                            env={**checkout_env(), "METARL_RELIABILITY_TEST": marker}, start_new_session=True)
    try:
        wait_for(lambda: records(run_dir) >= 2 or process.poll() is not None)
        workers = processes_with_env(marker)
        assert len(workers) >= 2  # the main process and its workers
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert len(list_checkpoints(run_dir)) == 1
    assert not still_running(workers, seconds=5)


@pytest.mark.slow
def test_sigusr1_stops_the_run_with_a_checkpoint(interrupt_training, tmp_path):
    run_dir = tmp_path / "run"
    returncode, _, stderr = interrupt_training([CONFIG, *RUN, "checkpoint.every=1000", f"run.dir={run_dir}"], run_dir,
                                               after_records=2, sig=signal.SIGUSR1, cwd=tmp_path)
    assert returncode == 138 and "stopped by SIGUSR1" in stderr, stderr
    assert len(list_checkpoints(run_dir)) == 1


@pytest.mark.slow
def test_ctrl_c_during_the_final_evaluation_keeps_the_trained_run(tmp_path):
    run_dir = tmp_path / "run"
    long_evaluation = ["evaluation.at_end=true", "evaluation.tasks=20000", "evaluation.steps=3"]
    process = train_process(CONFIG, *RUN, *long_evaluation, f"run.dir={run_dir}",
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: (run_dir / PARAMS_FILE).exists() or process.poll() is not None)  # training done
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "training finished (30 iterations" in stderr and f"metarl evaluate {run_dir}" in stderr
    assert "Traceback" not in stderr
    assert list_checkpoints(run_dir)[-1][0] == ITERATIONS


@pytest.mark.slow
def test_ctrl_c_during_metarl_evaluate_is_a_message(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    assert run_metarl("train", CONFIG, *RUN[:-3], "train.iterations=0", "evaluation.at_end=false", f"run.dir={run_dir}",
                      cwd=tmp_path).returncode == 0
    process = subprocess.Popen([sys.executable, "-m", "metarl", "evaluate", str(run_dir), "--tasks", "20000",
                                "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=checkout_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:  # torch is imported inside the command, so once it is loaded the command is running
        wait_for(lambda: "libtorch_cpu" in Path(f"/proc/{process.pid}/maps").read_text() or process.poll() is not None)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr.strip() == "metarl: stopped by Ctrl-C", stderr


def test_ctrl_c_inside_exec_source_exits_130_under_python_m(tmp_path):
    """A Ctrl-C raised inside exec'd source (torch's imports run dataclasses' and namedtuple's) and
    then handled must not make ``python -m`` kill itself by SIGINT on exit (CPython flags an exact
    KeyboardInterrupt from exec'd source as unhandled)."""
    (tmp_path / "ctrl_c_in_exec.py").write_text(
        "import os, signal, sys\n"
        "from metarl.signals import exit_status, stop_on_signals\n"
        "try:\n"
        "    with stop_on_signals():\n"
        "        exec('os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**7): pass')\n"
        "except KeyboardInterrupt as interrupt:\n"
        "    sys.exit(exit_status(interrupt))\n")
    env = checkout_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], capture_output=True, text=True, env=env,
                            timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, result.stderr


def test_an_ignored_ctrl_c_stays_ignored():
    """A script's background job (``metarl train ... &``) inherits an ignored SIGINT: keep it so."""
    from metarl.signals import stop_on_signals
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- the run directory


@pytest.mark.slow
def test_two_runs_racing_for_one_directory_one_wins_and_the_other_names_it(tmp_path):
    run_dir = tmp_path / "run"
    args = [CONFIG, *[a for a in RUN if not a.startswith("train.iterations")], "train.iterations=60",
            f"run.dir={run_dir}"]
    first, second = train_process(*args, cwd=tmp_path), train_process(*args, cwd=tmp_path)
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    loser = next(err for code, err in outcomes if code == 2)
    winner = first if first.returncode == 0 else second
    assert f"in use by process {winner.pid}" in loser
    assert [r["iteration"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(60))  # one run's records


@pytest.mark.slow
def test_resume_of_a_running_run_is_refused_naming_the_holder(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    endless = [arg for arg in RUN if not arg.startswith("train.iterations")] + ["train.iterations=100000"]
    process = train_process(CONFIG, *endless, "checkpoint.every=1", f"run.dir={run_dir}")
    try:
        wait_for(lambda: len(list_checkpoints(run_dir)) >= 1 or process.poll() is not None)
        result = run_metarl("train", "--resume", str(run_dir), cwd=tmp_path)
        assert result.returncode == 2 and f"in use by process {process.pid}" in result.stderr, result.stderr
    finally:
        process.kill()
        process.wait()
    assert lock_holder(run_dir) is None  # the kernel released the killed run's lock: it can be resumed


@pytest.mark.slow
def test_an_existing_directory_that_is_not_a_run_is_never_written_into(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert main(["train", CONFIG, *RUN, f"run.dir={mine}"]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", CONFIG, *RUN[:-3], "train.iterations=1", "evaluation.at_end=false", f"run.dir={empty}",
                 "--quiet"]) == 0


def test_evaluation_settings_are_checked_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", CONFIG, *RUN, "evaluation.task_set=nope", f"run.dir={run_dir}"]) == 2
    assert "has no task set 'nope'" in capsys.readouterr().err and not run_dir.exists()
    assert main(["train", CONFIG, *RUN, "evaluation.task_set=finn2017", "evaluation.tasks=41",
                 f"run.dir={run_dir}"]) == 2
    assert "task set 'finn2017' has 40 tasks" in capsys.readouterr().err and not run_dir.exists()


# ---------------------------------------------------------------- damaged files and divergence


@pytest.mark.slow
def test_resume_names_each_damaged_checkpoint_and_the_one_it_used(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    args = [CONFIG, *RUN[:-3], "train.iterations=3", "evaluation.at_end=false", "checkpoint.every=1",
            "checkpoint.keep=3", f"run.dir={run_dir}", "--quiet"]
    assert run_metarl("train", *args, cwd=tmp_path).returncode == 0
    (_, first), (_, second), (_, third) = list_checkpoints(run_dir)
    third.write_bytes(b"not a checkpoint")
    torch.save({"params": torch.load(second)["params"]}, second)  # readable, wrong structure
    result = run_metarl("train", "--resume", str(run_dir), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"checkpoint {third} is damaged (unreadable" in result.stderr
    assert f"checkpoint {second} is damaged (it lacks outer, iteration" in result.stderr
    assert f"resuming from {first} (iteration 1)" in result.stderr and "Traceback" not in result.stderr
    for _, path in list_checkpoints(run_dir):
        path.write_bytes(b"")
    result = run_metarl("train", "--resume", str(run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "3 checkpoint(s) and none is usable" in result.stderr, result.stderr


def test_a_diverging_update_is_undone_and_never_pushes_the_last_good_checkpoint_out(tiny, tmp_path, monkeypatch,
                                                                                    capsys):
    import metarl.experiment.trainer as trainer_module

    real = trainer_module.estimate_meta_gradient

    def explodes_from_iteration_two(method, oracle, *args, **kwargs):
        estimate = real(method, oracle, *args, **kwargs)
        if oracle.key[1] >= 2:  # (rollout stream, iteration): finite, but the step takes parameters to 1e12
            estimate.direction = {k: v * 1e12 for k, v in estimate.direction.items()}
        return estimate

    monkeypatch.setattr(trainer_module, "estimate_meta_gradient", explodes_from_iteration_two)
    config = tiny(outer={"kind": "sgd", "lr": 1.0, "max_nonfinite": 4}, train={"iterations": 20},
                  checkpoint={"every": 1, "keep": 2}, run={"dir": str(tmp_path / "run")}, evaluation={"at_end": False})
    with pytest.raises(NonFiniteError, match="4 iterations in a row"):
        run_training(config, progress=False)
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r.get("diverged", False) for r in metrics] == [False, False, True, True, True, True]
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [1, 2]  # the newest is from before the skips
    newest = torch.load(list_checkpoints(tmp_path / "run")[-1][1])["params"]
    assert all(float(v.abs().max()) < 1e3 for v in newest.values())
    assert "iteration 2: parameters beyond 1e+06" in capsys.readouterr().out


# ---------------------------------------------------------------- commands given bad input


def test_commands_given_bad_paths_say_what_is_wrong(tiny, tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert f"{str(tmp_path)!r} is a directory, not a config file" in capsys.readouterr().err

    config = tiny()
    run_dir = tmp_path / "nan-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(config))
    params = MetaTrainer(config).params
    params["log_std"].fill_(float("nan"))
    save_params(params, run_dir / PARAMS_FILE)
    assert main(["evaluate", str(run_dir), "--quiet"]) == 2
    assert "the parameters hold NaN or Inf" in capsys.readouterr().err
    assert not (run_dir / "evaluation.json").exists()


def test_plot_says_which_file_it_wrote(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = tiny(run={"dir": str(run_dir)}, train={"iterations": 0})
    run_training(config, progress=False)
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "p9")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'p9.png'}"
    assert (tmp_path / "p9.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_lock_file_records_its_holder(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, train={"iterations": 0}, evaluation={"at_end": False}), progress=False)
    info = json.loads((run_dir / "run.lock").read_text())
    assert set(info) == {"pid", "host", "since"}


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_another_config_is_an_error(tiny, tmp_path, capsys):
    small, large = tmp_path / "small", tmp_path / "large"
    for run_dir, hidden in ((small, [8]), (large, [16])):
        run_training(tiny(run={"dir": str(run_dir)}, policy={"hidden_sizes": hidden}, evaluation={"at_end": False}),
                     progress=False)
    (_, theirs), = list_checkpoints(large)
    (_, mine), = list_checkpoints(small)
    mine.write_bytes(theirs.read_bytes())
    assert main(["train", "--resume", str(small), "--quiet"]) == 2
    assert f"the parameters of {mine} do not fit the config's policy" in capsys.readouterr().err
