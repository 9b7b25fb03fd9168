"""Checkpoints, crash safety and exact resume."""

import os
import signal
from pathlib import Path

import pytest
import torch

from metarl.experiment.checkpoint import checkpoint_path, list_checkpoints, load_latest_checkpoint, save_checkpoint
from metarl.experiment.config import load_config
from metarl.experiment.metrics import read_metrics
from metarl.experiment.trainer import MetaTrainer, run_training
from tests.helpers import ROOT, TINY, without_times

CONFIG = str(ROOT / "configs/navigation-maml.yaml")
ITERATIONS = 30  # long enough that the kill lands mid-run even on a slow machine
RUN = [arg for arg in TINY if not arg.startswith("train.iterations")] + [
    f"train.iterations={ITERATIONS}", "checkpoint.every=2", "checkpoint.keep=2", "evaluation.at_end=false"]


def state(value: float = 1.0) -> dict:
    return {"params": {"w": torch.full((3,), value)}, "note": "anything else the caller keeps"}


def test_the_newest_k_are_kept_and_the_newest_is_loaded(tmp_path):
    for i in range(1, 5):
        save_checkpoint(tmp_path, i, state(i), keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [3, 4]
    latest = load_latest_checkpoint(tmp_path)
    assert latest.iteration == 4 and torch.equal(latest.state["params"]["w"], torch.full((3,), 4.0))
    assert load_latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_write_interrupted_midway_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, state(1))
    real_save = torch.save

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")  # what a killed process leaves behind
        raise OSError("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, state(2))
    monkeypatch.setattr(torch, "save", real_save)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [1]  # the half-written file has no checkpoint name
    latest = load_latest_checkpoint(tmp_path)
    assert latest.iteration == 1 and torch.equal(latest.state["params"]["w"], torch.ones(3))


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_why(tmp_path):
    save_checkpoint(tmp_path, 1, {**state(1), "iteration": 1})
    wrong = save_checkpoint(tmp_path, 2, state(2))  # readable, but not what the caller needs
    garbage = save_checkpoint(tmp_path, 3, state(3))
    garbage.write_bytes(b"garbage")
    latest = load_latest_checkpoint(tmp_path, required=("params", "iteration"))
    assert latest.iteration == 1
    assert [(path, why.split(":")[0]) for path, why in latest.damaged] == [(garbage, "unreadable"),
                                                                          (wrong, "it lacks iteration")]
    checkpoint_path(tmp_path, 1).write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds 3 checkpoint\(s\) and none is usable \(checkpoint-00000003.pt: "
                                         r"unreadable.*checkpoint-00000002.pt: it lacks iteration; "
                                         r"checkpoint-00000001.pt: unreadable"):
        load_latest_checkpoint(tmp_path, required=("params", "iteration"))


def test_a_full_disk_leaves_no_temporary_file_and_names_the_file(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full (a device that is always full) on this system")
    save_checkpoint(tmp_path, 1, state(1))
    target = checkpoint_path(tmp_path, 2)
    tmp = target.with_name(target.name + ".tmp")
    tmp.symlink_to("/dev/full")  # the write goes to a device that reports ENOSPC
    with pytest.raises(OSError, match=r"could not write .*checkpoint-00000002.pt \(No space left on device\)"):
        save_checkpoint(tmp_path, 2, state(2))
    assert not tmp.is_symlink() and [i for i, _ in list_checkpoints(tmp_path)] == [1]


def test_no_checkpoint_from_a_non_finite_state(tmp_path):
    with pytest.raises(ValueError, match="NaN or Inf"):
        save_checkpoint(tmp_path, 1, state(float("nan")))
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("outer", [{"kind": "adam", "anneal": True}, {"kind": "trpo"}])
def test_trainer_state_round_trips(tiny, tmp_path, outer):
    config = tiny(outer=outer, surrogate={"per_step_units": True}, meta={"inner_lr": 0.1})
    trainer = MetaTrainer(config)
    trainer.step()
    trainer.step()
    if outer["kind"] == "trpo":
        assert trainer.outer.state_dict()["kl_scale"] != 1.0  # the line search's warm start is state
    save_checkpoint(tmp_path, trainer.iteration, trainer.state_dict())
    restored = MetaTrainer(config)
    restored.load_state_dict(load_latest_checkpoint(tmp_path).state)
    assert (restored.iteration, restored.env_steps) == (trainer.iteration, trainer.env_steps)
    if outer["kind"] == "trpo":
        assert restored.outer.state_dict() == trainer.outer.state_dict()
    assert without_times([trainer.step()]) == without_times([restored.step()])
    for k in trainer.params:
        assert torch.equal(trainer.params[k], restored.params[k])


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(interrupt_training, run_metarl, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    returncode, _, _ = interrupt_training([CONFIG, *RUN, f"run.dir={killed}", "--quiet"], killed, after_records=5,
                                          sig=signal.SIGKILL, cwd=tmp_path)
    assert returncode == -signal.SIGKILL
    assert 5 <= len(read_metrics(killed / "metrics.jsonl")) < ITERATIONS  # killed in the middle of the run

    result = run_metarl("train", "--resume", str(killed), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_metarl("train", CONFIG, *RUN, f"run.dir={whole}", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    assert without_times(read_metrics(killed / "metrics.jsonl")) == without_times(read_metrics(whole / "metrics.jsonl"))
    assert [r["iteration"] for r in read_metrics(killed / "metrics.jsonl")] == list(range(ITERATIONS))
    final_killed, final_whole = torch.load(killed / "params.pt"), torch.load(whole / "params.pt")
    for k in final_whole:
        assert torch.equal(final_killed[k], final_whole[k]), k
    assert [i for i, _ in list_checkpoints(killed)] == [ITERATIONS - 2, ITERATIONS]  # keep = 2, the final one included


@pytest.mark.slow
def test_resume_trains_a_finished_run_further_as_if_it_had_been_planned_longer(run_metarl, tmp_path):
    short, whole = tmp_path / "short", tmp_path / "whole"
    common = [CONFIG, *RUN[:-3], "evaluation.at_end=false", "checkpoint.every=2", "--quiet"]
    assert run_metarl("train", *common, "train.iterations=3", f"run.dir={short}", cwd=tmp_path).returncode == 0
    result = run_metarl("train", "--resume", str(short), "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and f"has finished its 3 iterations; to train it further: metarl train --resume " \
        f"{short} train.iterations=N" in result.stderr, result.stderr
    assert len(read_metrics(short / "metrics.jsonl")) == 3  # nothing done again

    result = run_metarl("train", "--resume", str(short), "train.iterations=5", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert run_metarl("train", *common, "train.iterations=5", f"run.dir={whole}", cwd=tmp_path).returncode == 0
    assert without_times(read_metrics(short / "metrics.jsonl")) == without_times(read_metrics(whole / "metrics.jsonl"))
    assert load_config(short / "config.yaml").train.iterations == 5
    for k, v in torch.load(whole / "params.pt").items():
        assert torch.equal(torch.load(short / "params.pt")[k], v), k

    with pytest.raises(ValueError, match=r"only train.iterations.* \(not meta.inner_lr\)"):  # the Python API too
        run_training(load_config(short / "config.yaml", ["meta.inner_lr=0.5"]), progress=False, resume=short)
    result = run_metarl("train", "--resume", str(short), "meta.inner_lr=0.5", "train.iterations=6", cwd=tmp_path)
    assert (result.returncode == 2 and "only train.iterations" in result.stderr
            and "(not meta.inner_lr)" in result.stderr)
    result = run_metarl("train", "--resume", str(short), "train.iterations=4", cwd=tmp_path)
    assert result.returncode == 2 and "train.iterations=4 is below the 5 iterations the run has done" in result.stderr
    assert load_config(short / "config.yaml").train.iterations == 5  # refused changes leave config.yaml alone


@pytest.mark.slow
def test_resume_evaluates_again_when_the_evaluation_is_older_than_the_parameters(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    assert run_metarl("train", CONFIG, *RUN[:-3], "train.iterations=2", f"run.dir={run_dir}", "--quiet",
                      cwd=tmp_path).returncode == 0
    result = run_metarl("train", "--resume", str(run_dir), "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and "has finished its 2 iterations" in result.stderr, result.stderr
    past = (run_dir / "params.pt").stat().st_mtime - 60  # as if its evaluation had been stopped after a longer run
    os.utime(run_dir / "evaluation.json", (past, past))
    result = run_metarl("train", "--resume", str(run_dir), "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and "has finished" not in result.stderr and "mean return" in result.stdout
    assert (run_dir / "evaluation.json").stat().st_mtime > past + 60


@pytest.mark.slow
def test_resume_errors_name_the_problem(run_metarl, tmp_path):
    result = run_metarl("train", "--resume", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "config.yaml is missing" in result.stderr
    run_dir = tmp_path / "run"
    result = run_metarl("train", CONFIG, *RUN[:-3], "train.iterations=1", "evaluation.at_end=false",
                        "checkpoint.every=5", f"run.dir={run_dir}", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    result = run_metarl("train", "--resume", str(run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "no checkpoint to resume from" in result.stderr
    result = run_metarl("train", CONFIG, "--resume", str(run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "give no config file" in result.stderr


def test_training_never_checkpoints_non_finite_parameters(tiny, tmp_path, capsys):
    from metarl.experiment.trainer import checkpoint_unless_skipped

    trainer = MetaTrainer(tiny())
    trainer.params["log_std"].fill_(float("nan"))
    checkpoint_unless_skipped(trainer.state_dict(), tmp_path, keep=3)
    assert list_checkpoints(tmp_path) == []
    captured = capsys.readouterr()
    assert "checkpoint skipped" in captured.out + captured.err
