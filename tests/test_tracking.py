"""W&B tracking in offline mode, the real ``wandb`` package (no mocks): what a run writes under the
run directory is read back from W&B's own transaction log and media files."""

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from metarl.experiment.config import WandbConfig
from metarl.experiment.evaluation import EvaluationResult
from metarl.experiment.plotting import plot_adaptation
from metarl.experiment.tracking import (
    NullTracker,
    TrackingError,
    WandbTracker,
    loggable,
    make_tracker,
    read_offline_run,
    resolve_mode,
)

ROOT = Path(__file__).parent.parent
SETTINGS = WandbConfig(mode="offline", project="metarl-tests", group="tiny-group", tags=["tiny", "offline"],
                       name="tiny-run")
CONFIG = {"name": "tiny", "seed": 3, "meta": {"method": "maml", "inner_lr": 0.1, "batch_tasks": 3}}
RECORDS = [
    {"iteration": 0, "return_pre": -40.0, "return_post": -35.5, "meta_grad_norm": 2.0, "skipped": False,
     "env_steps": 60, "line_search": "accepted", "timings": {"sampling": 0.25, "update": 0.01}},
    {"iteration": 1, "return_pre": -38.0, "return_post": -31.25, "meta_grad_norm": "nan", "skipped": True,
     "env_steps": 120, "line_search": "rejected", "timings": {"sampling": 0.5, "update": 0.02}},
    {"iteration": 2, "return_pre": -36.0, "return_post": -30.0, "meta_grad_norm": float("nan"), "skipped": True,
     "env_steps": 180, "line_search": "inf", "timings": {"sampling": 0.75, "update": 0.03}},
]
RESULT = EvaluationResult(steps=[0, 1, 2], mean_return=[-30.0, -20.5, -18.25], stderr=[1.5, 1.25, 1.0],
                          num_tasks=4, seed=7, episodes_per_task=2)


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory):
    """Keep W&B out of the user's config, cache and data directories, and quiet."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CONFIG", "CACHE", "DATA"):
            patch.setenv(f"WANDB_{name}_DIR", str(home / name.lower()))
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_ENTITY"):
            patch.delenv(name, raising=False)
        yield home


def service_processes() -> list[int]:
    """Live processes of this process's W&B service: ``wandb-core --pid <us>`` and its children
    (``wandb-symon``). ``-ww``: full command lines, whatever the terminal width."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True,
                           check=True).stdout
    rows = []
    for line in table.splitlines():
        pid, ppid, stat, *args = line.split(None, 3)
        if not stat.startswith("Z"):
            rows.append((int(pid), int(ppid), (args or [""])[0] + " "))
    core = {pid for pid, _, args in rows if "wandb-core" in args and f"--pid {os.getpid()} " in args}
    return sorted(pid for pid, ppid, _ in rows if pid in core or ppid in core)


def assert_service_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while set(pids) & set(service_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(pids) & set(service_processes()), "a W&B service process outlived finish()"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One offline run: three metric records, an evaluation with its plot, a checkpoint."""
    run_dir = tmp_path_factory.mktemp("run")
    plot = plot_adaptation({"tiny": RESULT}, run_dir / "adaptation.png")
    checkpoint = run_dir / "checkpoint-000002.pt"
    torch.save({"iteration": 2, "params": {"w": torch.ones(3)}}, checkpoint)
    with make_tracker(SETTINGS, run_dir, CONFIG) as tracker:
        assert isinstance(tracker, WandbTracker)
        service = service_processes()
        for record in RECORDS:
            tracker.log_metrics(record)
        tracker.log_evaluation(RESULT, plot)
        tracker.log_checkpoint(checkpoint, 2)
    assert service, "no W&B service was found while the run was open"
    assert_service_gone(service)
    return run_dir, tracker


@pytest.mark.slow
def test_offline_run_directory_lies_under_the_run_directory(logged):
    run_dir, tracker = logged
    assert tracker.local_dir.parent == run_dir / "wandb"
    assert tracker.local_dir.name.startswith("offline-run-") and tracker.local_dir.name.endswith(tracker.run_id)
    assert (tracker.local_dir / f"run-{tracker.run_id}.wandb").stat().st_size > 1000


def test_history_holds_every_metric_at_its_iteration(logged):
    run = read_offline_run(logged[0])
    assert run.run_id == logged[1].run_id and run.exit_code == 0
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    assert run.metric("iteration") == {0: 0, 1: 1, 2: 2}
    assert run.metric("return_post") == {0: -35.5, 1: -31.25, 2: -30.0}
    assert run.metric("env_steps") == {0: 60, 1: 120, 2: 180}
    assert run.metric("skipped") == {0: False, 1: True, 2: True}
    assert run.metric("timings")[2] == {"sampling": 0.75, "update": 0.03}
    grad_norms = run.metric("meta_grad_norm")
    assert grad_norms[0] == 2.0 and math.isnan(grad_norms[1]) and math.isnan(grad_norms[2])
    assert run.metric("line_search") == {0: "accepted", 1: "rejected", 2: math.inf}


def test_config_and_run_identity(logged):
    run = read_offline_run(logged[0])
    assert run.config == CONFIG
    assert (run.project, run.group, run.name) == ("metarl-tests", "tiny-group", "tiny-run")
    assert run.tags == ["tiny", "offline"]


def test_evaluation_table_summary_and_plot(logged):
    run_dir, tracker = logged
    run = read_offline_run(run_dir)
    assert run.summary["evaluation/return_step_1"] == -20.5
    assert run.summary["evaluation/stderr_step_2"] == 1.0
    assert run.summary["evaluation/return_step_0"] == -30.0
    assert (run.summary["evaluation/num_tasks"], run.summary["evaluation/seed"]) == (4, 7)
    table_ref = run.history[-1]["evaluation/table"]  # logged at the last iteration's step
    assert table_ref["_type"] == "table-file" and table_ref["nrows"] == 3
    table = json.loads((tracker.local_dir / "files" / table_ref["path"]).read_text())
    assert table == {"columns": ["steps", "mean_return", "stderr"],
                     "data": [[0, -30.0, 1.5], [1, -20.5, 1.25], [2, -18.25, 1.0]]}
    image_ref = run.summary["evaluation/plot"]
    assert image_ref["_type"] == "image-file" and image_ref["format"] == "png"
    assert (tracker.local_dir / "files" / image_ref["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_a_model_artifact(logged, wandb_home):
    run = read_offline_run(logged[0])
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert models == [{"name": f"checkpoint-{run.run_id}", "type": "model", "aliases": ["iteration-2", "latest"],
                       "metadata": {"iteration": 2}, "files": ["checkpoint-000002.pt"]}]
    # Until it is synced, W&B keeps a staging copy under WANDB_DATA_DIR (here a temporary directory).
    assert any((wandb_home / "data").rglob("*"))


@pytest.mark.slow
def test_resuming_logs_into_the_same_run_without_repeating_steps(tmp_path):
    first = make_tracker(SETTINGS, tmp_path, CONFIG)
    for iteration in range(4):
        first.log_metrics({"iteration": iteration, "x": float(iteration)})
    first.finish(exit_code=1)  # as if it had crashed after iteration 3, its last checkpoint at 2
    second = make_tracker(SETTINGS, tmp_path, CONFIG, resume_id=first.run_id)
    assert second.run_id == first.run_id and second.local_dir != first.local_dir
    assert second.first_step == 4
    for iteration in range(2, 6):
        second.log_metrics({"iteration": iteration, "x": 10.0 + iteration})
    second.log_evaluation(RESULT)
    service = service_processes()
    second.finish()
    assert service
    assert_service_gone(service)
    # Offline: one directory per segment, same id; wandb sync takes both (in start order) into one run.
    # (A second segment started within the same second gets a "-1" suffix on its directory.)
    logs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [log.name for log in logs] == [f"run-{first.run_id}.wandb"] * 2
    run = read_offline_run(tmp_path)
    assert run.files == [first.local_dir / f"run-{run.run_id}.wandb", second.local_dir / f"run-{run.run_id}.wandb"]
    assert run.metric("x") == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 4: 14.0, 5: 15.0}
    assert [row["_step"] for row in run.history] == [0, 1, 2, 3, 4, 5] and run.exit_code == 0
    assert run.history[-1]["evaluation/table"]["nrows"] == 3 and run.summary["evaluation/return_step_2"] == -18.25
    dry_run = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(tmp_path / "wandb")],
                             capture_output=True, text=True, timeout=60)
    assert "Would sync 2 run(s)" in dry_run.stdout + dry_run.stderr


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, **env, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=environment)


@pytest.mark.slow
def test_disabled_mode_writes_nothing_and_never_imports_wandb(tmp_path, wandb_home):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"0")
    before = sorted(wandb_home.rglob("*"))
    result = run_python(f"""
        import sys
        from pathlib import Path
        from metarl.experiment.evaluation import EvaluationResult
        from metarl.experiment.config import WandbConfig
        from metarl.experiment.tracking import make_tracker
        tracker = make_tracker(WandbConfig(mode="disabled"), Path("run"), {{"seed": 1}})
        tracker.log_metrics({{"iteration": 0, "x": "nan"}})
        tracker.log_evaluation(EvaluationResult([0], [1.0], [0.5], 2, 1, 1), Path("plot.png"))
        tracker.log_checkpoint(Path({str(checkpoint)!r}), 0)
        tracker.finish()
        print(type(tracker).__name__, tracker.run_id, tracker.local_dir, "wandb" in sys.modules)
    """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NullTracker", "None", "None", "False"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no run/, no wandb/
    assert sorted(wandb_home.rglob("*")) == before


def test_missing_wandb_gives_a_clear_error(tmp_path):
    result = run_python("""
        import sys
        sys.modules["wandb"] = None  # as if it were not installed
        from pathlib import Path
        from metarl.experiment.config import WandbConfig
        from metarl.experiment.tracking import TrackingError, make_tracker
        try:
            make_tracker(WandbConfig(mode="offline"), Path("run"), {})
        except TrackingError as error:
            print(isinstance(error, ValueError), error)
    """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True ")
    assert "pip install wandb" in result.stdout and "logging.wandb.mode=disabled" in result.stdout


@pytest.mark.slow
def test_online_mode_without_login_gives_a_clear_error(tmp_path):
    result = run_python("""
        from pathlib import Path
        from metarl.experiment.config import WandbConfig
        from metarl.experiment.tracking import TrackingError, make_tracker
        try:
            make_tracker(WandbConfig(mode="online"), Path("run"), {})
        except TrackingError as error:
            print(error)
    """, cwd=tmp_path, HOME=str(tmp_path), WANDB_API_KEY="", NETRC=str(tmp_path / "netrc"))
    assert result.returncode == 0, result.stderr
    assert "wandb login" in result.stdout and "logging.wandb.mode=offline" in result.stdout


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(TrackingError, match="logging.wandb.mode"):
        make_tracker(WandbConfig.model_construct(mode="sometimes"), tmp_path, {})  # past the schema's check


def test_auto_mode_follows_wandb_mode_then_the_api_key(tmp_path):
    assert resolve_mode("disabled", {"WANDB_MODE": "online"}) == "disabled"
    assert resolve_mode("auto", {"WANDB_MODE": "dryrun", "WANDB_API_KEY": "k"}) == "offline"
    assert resolve_mode("auto", {"WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode("auto", {"WANDB_API_KEY": "k" * 40}) == "online"
    netrc_file = tmp_path / "netrc"
    assert resolve_mode("auto", {"NETRC": str(netrc_file)}) == "offline"  # no such file
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_mode("auto", {"NETRC": str(netrc_file)}) == "online"
    assert resolve_mode("auto", {"NETRC": str(netrc_file), "WANDB_BASE_URL": "https://wandb.example.org"}) == "offline"


def test_loggable_values():
    assert math.isnan(loggable("nan")) and loggable("-inf") == -math.inf and loggable("Infinity") == math.inf
    assert loggable("accepted") == "accepted" and loggable(True) is True
    assert loggable({"a": "inf", "b": torch.tensor(2.5)}) == {"a": math.inf, "b": 2.5}
    assert isinstance(NullTracker().run_id, type(None))


# --- Through training: the metarl command with W&B offline ---------------------------------------


TRAIN = [str(ROOT / "configs/navigation-maml.yaml"), "meta.batch_tasks=3", "meta.episodes_per_task=2",
         "env.kwargs={horizon: 10}", "evaluation.tasks=4", "evaluation.steps=1", "logging.wandb.mode=offline",
         "logging.wandb.project=metarl-tests", "--quiet"]


@pytest.mark.slow
def test_a_training_run_logs_config_metrics_evaluation_plot_and_checkpoint(run_metarl, tmp_path):
    run_dir = tmp_path / "run"
    result = run_metarl("train", *TRAIN, "train.iterations=3", "checkpoint.every=2", f"run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wandb sync {run_dir / 'wandb'}" in result.stdout
    run = read_offline_run(run_dir)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert run.metric("return_pre") == {r["iteration"]: r["return_pre"] for r in metrics}
    assert set(run.metric("time_sampling_s")) == {0, 1, 2}
    assert run.config["meta"]["batch_tasks"] == 3 and run.config["logging"]["wandb"]["mode"] == "offline"
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert run.summary["evaluation/return_step_1"] == pytest.approx(evaluation["mean_return"][1])
    assert (run_dir / "adaptation.png").is_file()
    curves = run.summary["training/curves"]  # the training curves as an image, also in the run directory
    assert curves["_type"] == "image-file" and curves["format"] == "png"
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a["metadata"]["iteration"] for a in run.artifacts if a["type"] == "model"] == [3]
    assert run.exit_code == 0


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_same_wandb_run(interrupt_training, run_metarl, tmp_path):
    import signal

    run_dir = tmp_path / "run"
    args = [*TRAIN, "train.iterations=6", "checkpoint.every=1", "evaluation.at_end=false", f"run.dir={run_dir}"]
    interrupt_training(args, run_dir, after_records=3, sig=signal.SIGKILL, cwd=tmp_path)
    first_id = read_offline_run(run_dir).run_id
    result = run_metarl("train", "--resume", str(run_dir), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = read_offline_run(run_dir)  # every segment of the one run id
    assert run.run_id == first_id and len(run.files) == 2
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in metrics] == list(range(6))
    # W&B holds every step from its last one before the kill onward (the resume sends again what it
    # missed), each once, with the values of metrics.jsonl; it may lack steps from the killed
    # process's last seconds that come before one it did write.
    logged = run.metric("return_pre")
    steps = sorted(logged)
    assert steps == list(range(steps[0], 6)) and steps[0] <= 3
    assert logged == {r["iteration"]: r["return_pre"] for r in metrics if r["iteration"] in logged}
