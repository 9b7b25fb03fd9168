"""The sampler back-ends: the same episodes for the same seed, faults, shutdown, config, the command line.

Every test that waits on workers runs under :func:`deadline`, so a sampler that hangs fails the
test instead of the suite.
"""

import gc
import json
import os
import signal
import sys
import time
import uuid
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch

from metarl.cli import main
from metarl.experiment.build import build_family, build_policy, build_sampler
from metarl.experiment.config import ConfigError, load_config, validate
from metarl.experiment.trainer import MetaTrainer
from metarl.rl.sampling import (
    Episodes,
    RaySampler,
    SubprocessSampler,
    VectorSampler,
    WorkerError,
    WorkerRestartWarning,
    WorkerSpec,
)
from tests.faulty_env import make_parts
from tests.helpers import ROOT, TINY, checkout_env, processes_with_env, running, still_running

FIELDS = ("observations", "actions", "rewards", "mask", "log_probs")
M = 3  # episodes per task


def assert_same(a: Episodes, b: Episodes) -> None:
    """Bit for bit."""
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and torch.equal(x, y), field


@contextmanager
def deadline(seconds: float):
    """Fail (TimeoutError in the test) if the block takes longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"the test took longer than {seconds} s: a sampler hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def spec(**fault) -> WorkerSpec:
    return WorkerSpec(partial(make_parts, safe_pid=os.getpid(), **fault), episodes_per_task=M, seed=7)


def reference(tasks, params, key) -> Episodes:
    """The in-process sampler's episodes (faults never fire in this process)."""
    family, policy = make_parts(safe_pid=os.getpid())
    return VectorSampler(family, policy, M, seed=7).sample(tasks, params, key)


def task_params(policy, num_tasks: int, seed: int = 0) -> dict:
    """One distinct parameter set per task."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v.expand(num_tasks, *v.shape) + 0.3 * torch.randn((num_tasks, *v.shape), generator=generator)
            for k, v in policy.init_params().items()}


def make_tasks(*goals, faulty=()):
    return [{"goal": np.array(goal, dtype=np.float64), "faulty": i in faulty} for i, goal in enumerate(goals)]


GOALS = [(0.3, -0.2), (-0.4, 0.1), (0.001, 0.0), (0.2, 0.45)]


def calls(policy):
    """(tasks, params, key) of calls that split among workers in different ways: whole tasks, tasks cut
    between workers, fewer pairs than workers, shared parameters, and a task whose episodes end
    at the first step (the policy of task 2 stays put at a goal 0.001 from the start)."""
    stopping = task_params(policy, 4, seed=1)
    for k in stopping:
        stopping[k][2] = 0.0
    stopping["log_std"][2] = -20.0
    return [
        (make_tasks(*GOALS), stopping, (0,)),
        (make_tasks(*GOALS[:3]), task_params(policy, 3, seed=2), (1, 2)),
        (make_tasks(*GOALS[:1]), task_params(policy, 1, seed=3), (3,)),
        (make_tasks(*GOALS[1:]), policy.init_params(), (4,)),
    ]


def check_backend(sampler, policy) -> None:
    for tasks, params, key in calls(policy):
        expected = reference(tasks, params, key)
        assert_same(sampler.sample(tasks, params, key), expected)
    assert expected.horizon == 10
    first = reference(*calls(policy)[0])
    assert first.mask[:, 2].sum() == M and first.mask[:, 0].sum() == 10 * M  # episodes of different lengths


@pytest.mark.parametrize("workers", [2, 5])
def test_subprocess_workers_give_the_vector_samplers_episodes_bit_for_bit(workers):
    policy = make_parts()[1]
    with deadline(60), SubprocessSampler(spec(), policy, workers=workers, timeout=30) as sampler:
        check_backend(sampler, policy)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from metarl.rl.sampling.ray_actors import local_ray_system_config

    # As the sampler's own local instance: workers at niceness 0, not Ray's 15 (which slows their
    # start-up past the timeout on a machine with other busy processes).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config=local_ray_system_config())
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_actors_same_episodes_restart_after_a_kill_error_names_the_worker_and_shutdown(local_ray):
    policy = make_parts()[1]
    with deadline(120):
        sampler = RaySampler(spec(fault="raise"), policy, workers=2, timeout=60)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in sampler.worker_pids] == [os.nice(0)] * 2
        check_backend(sampler, policy)
        killed = sampler.worker_pids[1]
        os.kill(killed, signal.SIGKILL)
        tasks, params, key = calls(policy)[1]
        with pytest.warns(WorkerRestartWarning, match=r"sampling worker 1 of 2 \(Ray actor, pid \d+\) crashed"):
            assert_same(sampler.sample(tasks, params, key), reference(tasks, params, key))
        assert killed not in sampler.worker_pids
        pids = sampler.worker_pids
        with pytest.raises(WorkerError, match=r"sampling worker 1 of 2 \(Ray actor, pid \d+\) raised RuntimeError: "
                                              r"the faulty env failed on purpose \(sampling task 1 of the call\)"):
            sampler.sample(make_tasks(*GOALS[:2], faulty=[1]), task_params(policy, 2), (5,))
        assert sampler.closed and not still_running(pids)
    assert local_ray.is_initialized()  # a Ray instance the process started itself is left running


def test_a_local_ray_instance_the_sampler_starts_runs_its_workers_at_normal_priority(monkeypatch):
    ray = pytest.importorskip("ray")
    from metarl.rl.sampling.ray_actors import RayActorPool

    options = {}

    def init(**kwargs):
        options.update(kwargs)
        raise RuntimeError("not started in this test")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(WorkerError, match="could not start Ray: RuntimeError: not started in this test"):
        RayActorPool(spec(), 2)
    assert options["_system_config"] == {"worker_niceness": 0} and options["address"] is None


def test_an_unreachable_ray_address_is_reported_instead_of_waited_for():
    from metarl.rl.sampling.ray_actors import check_reachable

    with deadline(30), pytest.raises(WorkerError, match=r"could not connect to the Ray cluster at sampler.address = "
                                                        r"'127.0.0.1:1': ConnectionRefusedError"):
        check_reachable("127.0.0.1:1", timeout=10)
    check_reachable("auto", timeout=10)  # resolved by Ray itself


def test_a_worker_killed_mid_sample_is_restarted_and_its_share_sampled_again(tmp_path):
    once = tmp_path / "crash-once"
    policy = make_parts()[1]
    tasks, params = make_tasks(*GOALS[:2], faulty=[1]), task_params(policy, 2)
    with deadline(60), SubprocessSampler(spec(fault="crash", once_file=str(once)), policy, timeout=30) as sampler:
        before = sampler.worker_pids
        once.touch()
        with pytest.warns(WorkerRestartWarning, match=r"sampling worker 1 of 2 \(subprocess, pid \d+\) crashed: "
                                                      r"killed by signal SIGKILL"):
            assert_same(sampler.sample(tasks, params, (0,)), reference(tasks, params, (0,)))
        assert not once.exists() and sampler.worker_pids[0] == before[0] and sampler.worker_pids[1] != before[1]
        # Killed between calls: found dead at the next call.
        os.kill(sampler.worker_pids[0], signal.SIGKILL)
        with pytest.warns(WorkerRestartWarning, match="sampling worker 0 of 2"):
            assert_same(sampler.sample(tasks, params, (1,)), reference(tasks, params, (1,)))
        pids = sampler.worker_pids
    assert not still_running([*before, *pids])


def test_a_worker_that_keeps_crashing_stops_the_run_with_the_cause():
    policy = make_parts()[1]
    with deadline(60):
        sampler = SubprocessSampler(spec(fault="crash"), policy, timeout=30, max_restarts=1)
        with pytest.warns(WorkerRestartWarning), pytest.raises(WorkerError) as error:
            sampler.sample(make_tasks(*GOALS[:2], faulty=[1]), task_params(policy, 2), (0,))
    message = str(error.value)
    assert message.startswith("sampling worker 1 of 2 (subprocess, pid ")
    assert ("crashed: killed by signal SIGKILL (sampling task 1 of the call); not restarted: 1 restart(s) in this "
            "call already, the limit sampler.max_restarts = 1") in message
    assert sampler.closed and not still_running(sampler.worker_pids)
    with pytest.raises(RuntimeError, match=r"the sampler is closed \(after: WorkerError: sampling worker 1"):
        sampler.sample(make_tasks(*GOALS[:2]), task_params(policy, 2), (0,))


@pytest.mark.slow
def test_a_hung_worker_is_detected_within_the_timeout(tmp_path):
    once = tmp_path / "hang-once"
    policy = make_parts()[1]
    tasks, params = make_tasks(*GOALS[:2], faulty=[0]), task_params(policy, 2)
    with deadline(60), SubprocessSampler(spec(fault="hang", once_file=str(once)), policy, timeout=2.0) as sampler:
        once.touch()
        start = time.monotonic()
        with pytest.warns(WorkerRestartWarning, match=r"worker 0 of 2 .* hung: no reply within sampler.timeout = 2 s"):
            assert_same(sampler.sample(tasks, params, (0,)), reference(tasks, params, (0,)))
        assert time.monotonic() - start < 15
    with deadline(60):
        sampler = SubprocessSampler(spec(fault="hang"), policy, timeout=2.0, max_restarts=0)
        start = time.monotonic()
        with pytest.raises(WorkerError, match=r"worker 0 of 2 .* hung: no reply within sampler.timeout = 2 s .*"
                                              r"the limit sampler.max_restarts = 0"):
            sampler.sample(tasks, params, (0,))
        assert time.monotonic() - start < 10
    assert not still_running(sampler.worker_pids)


def test_an_exception_in_the_environment_names_the_worker_and_stops_every_worker():
    policy = make_parts()[1]
    with deadline(60):
        sampler = SubprocessSampler(spec(fault="raise"), policy, workers=2, timeout=30)
        pids = sampler.worker_pids
        with pytest.raises(WorkerError) as error:
            sampler.sample(make_tasks(*GOALS[:2], faulty=[1]), task_params(policy, 2), (0,))
    message = str(error.value)
    assert message.startswith(f"sampling worker 1 of 2 (subprocess, pid {pids[1]}) raised RuntimeError: the faulty "
                              "env failed on purpose (sampling task 1 of the call)")
    assert "the worker's traceback:" in message and "faulty_env.py" in message
    assert sampler.closed and not still_running(pids)


def test_a_worker_that_cannot_start_is_reported():
    with deadline(60), pytest.raises(WorkerError, match=r"sampling worker \d of 2 \(subprocess, pid \d+\) failed to "
                                                        r"start: raised ValueError: fault = 'no such fault'"):
        SubprocessSampler(spec(fault="no such fault"), make_parts()[1], timeout=30)


def test_workers_stop_on_close_and_on_garbage_collection():
    policy = make_parts()[1]
    with deadline(60):
        with SubprocessSampler(spec(), policy, workers=2, timeout=30) as sampler:
            pids = sampler.worker_pids
            assert all(running(pid) for pid in pids)
        assert not still_running(pids)

        sampler = SubprocessSampler(spec(), policy, workers=2, timeout=30)
        pids = sampler.worker_pids
        del sampler
        gc.collect()
        assert not still_running(pids)


CTRL_C_CHILD = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if our parent ignores SIGINT
from tests.test_samplers import GOALS, SubprocessSampler, make_parts, make_tasks, spec, task_params
policy = make_parts()[1]
sampler = SubprocessSampler(spec(fault="hang", once_file=sys.argv[1]), policy, workers=2, timeout=30)
print(json.dumps(sampler.worker_pids), flush=True)
sampler.sample(make_tasks(*GOALS[:2], faulty=[0]), task_params(policy, 2), (0,))
"""


@pytest.mark.slow
def test_ctrl_c_during_a_call_stops_the_run_and_its_workers_at_once(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to every process of the group: the workers ignore it, the
    main process's KeyboardInterrupt stops them, long before the hung worker's timeout. Run in a
    child process, as a user's run is (the test process's own signal state does not interfere)."""
    import subprocess

    hanging = tmp_path / "hang-once"  # removed by the worker that starts hanging
    hanging.touch()
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, str(hanging)], cwd=ROOT, env=checkout_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with deadline(60):
            pids = json.loads(child.stdout.readline())
            while hanging.exists():  # then the call is under way
                time.sleep(0.05)
            for pid in pids:
                os.kill(pid, signal.SIGINT)
            time.sleep(0.3)
            assert all(running(pid) for pid in pids)  # the workers ignore SIGINT
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=20)
        assert time.monotonic() - sent < 5  # not after the 30 s timeout
        assert child.returncode != 0 and "KeyboardInterrupt" in stderr
        assert not still_running(pids)
    finally:
        child.kill()


def navigation(**sampler) -> tuple:
    config = validate({"seed": 5, "env": {"kwargs": {"horizon": 10}}, "policy": {"hidden_sizes": [16]},
                       "sampler": sampler})
    family = build_family(config)
    return config, family, build_policy(config, family)


def test_build_sampler_picks_the_back_end_from_the_config():
    config, family, policy = navigation()
    assert type(build_sampler(config, family, policy, 5, M)) is VectorSampler
    config, family, policy = navigation(kind="subprocess", workers=3, timeout=20, max_restarts=1)
    with deadline(60), build_sampler(config, family, policy, 5, M) as sampler:
        assert type(sampler) is SubprocessSampler and len(sampler.worker_pids) == 3
        assert (sampler.timeout, sampler.max_restarts, sampler.seed, sampler.episodes_per_task) == (20, 1, 5, M)


def test_bad_sampler_settings_are_named_with_what_is_allowed():
    assert validate({}).sampler.model_dump() == {"kind": "vector", "workers": 2, "address": None, "timeout": 300.0,
                                                 "max_restarts": 3}
    cases = {
        "kind": ("gpu", "sampler.kind = 'gpu': Input should be 'vector', 'subprocess' or 'ray'"),
        "workers": (0, "sampler.workers = 0: Input should be greater than or equal to 1"),
        "timeout": (0, "sampler.timeout = 0: Input should be greater than 0"),
        "max_restarts": (-1, "sampler.max_restarts = -1: Input should be greater than or equal to 0"),
        "address": ("", "sampler.address = '': String should have at least 1 character"),
        "colour": ("red", "sampler.colour: unknown field; allowed here: kind, workers, address, timeout, max_restarts"),
    }
    for field, (value, message) in cases.items():
        with pytest.raises(ConfigError) as error:
            validate({"sampler": {"kind": "ray", field: value} if field == "address" else {field: value}})
        assert message in str(error.value), (field, str(error.value))
    with pytest.raises(ConfigError, match="address = 'auto' with kind = 'subprocess': an address is a Ray cluster's"):
        validate({"sampler": {"kind": "subprocess", "address": "auto"}})
    assert validate({"sampler": {"kind": "ray", "address": "auto", "timeout": 5}}).sampler.timeout == 5.0


def test_ray_without_ray_installed_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    config, family, policy = navigation(kind="ray")
    with pytest.raises(ImportError, match=r"sampler.kind = 'ray' needs Ray, which is not installed: "
                                          r"pip install \"metarl\[ray\]\""):
        build_sampler(config, family, policy, 5, M)
    assert main(["train", str(ROOT / "configs/navigation-maml.yaml"), "sampler.kind=ray",
                 f"run.dir={tmp_path / 'run'}"]) == 2
    assert "metarl: error: sampler.kind = 'ray' needs Ray" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_trains_with_subprocess_workers_the_same_numbers_and_leaves_no_process(run_metarl, tmp_path, monkeypatch):
    marker = f"METARL_SAMPLERS_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))  # inherited by the command, its fork server and its workers
    run_dir = tmp_path / "run"
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, "sampler.kind=subprocess",
                        "train.threads=1", "evaluation.at_end=false", f"run.dir={run_dir}", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not processes_with_env(marker)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    # The same run in this process with the in-process sampler: the same numbers.
    threads = torch.get_num_threads()
    try:
        with MetaTrainer(load_config(run_dir / "config.yaml", ["sampler.kind=vector"])) as trainer:
            for record in records:
                expected = trainer.step()
                for key in ("env_steps", "return_pre", "return_post", "meta_grad_norm"):
                    assert record[key] == expected[key], key
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_ctrl_c_during_a_run_with_subprocess_workers_leaves_no_process(interrupt_long_run, monkeypatch):
    marker = f"METARL_SAMPLERS_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    _, returncode, _, stderr = interrupt_long_run("sampler.kind=subprocess", after_records=1)
    assert returncode == 130, stderr
    assert "stopped by Ctrl-C after" in stderr and "Traceback" not in stderr
    assert not still_running(processes_with_env(marker), seconds=5)
