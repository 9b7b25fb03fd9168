"""train.device: the policy, meta-gradient and outer step on a device, rollouts on the CPU."""

import subprocess
import sys

import pytest
import torch

from metarl.experiment.build import on_device, resolve_device
from metarl.experiment.checkpoint import load_latest_checkpoint
from metarl.experiment.config import ConfigError, load_config
from metarl.experiment.metrics import read_metrics
from metarl.experiment.run_dir import load_params
from metarl.experiment.trainer import MetaTrainer, run_training
from metarl.rl.sampling import Episodes
from tests.helpers import ROOT, checkout_env, without_times

NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False)"


def trained(tiny, tmp_path, name: str, device: str | None) -> tuple[list[dict], dict[str, torch.Tensor]]:
    train = {"iterations": 3} if device is None else {"iterations": 3, "device": device}
    run_dir = tmp_path / name
    run_training(tiny(run={"dir": str(run_dir)}, train=train, outer={"kind": "trpo"},
                      evaluation={"tasks": 4, "steps": 1}), progress=False)
    return without_times(read_metrics(run_dir / "metrics.jsonl")), load_params(run_dir / "params.pt")


def test_unknown_device_is_a_config_error_naming_the_field(tiny):
    with pytest.raises(ConfigError, match="train.device 'gpu' is unknown; allowed: cpu, cuda, cuda:N, auto"):
        tiny(train={"device": "gpu"})


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_says_so_from_the_command_line(tiny, tmp_path):
    with pytest.raises(ValueError, match="sees no CUDA device"):
        MetaTrainer(tiny(train={"device": "cuda"}))
    done = subprocess.run([sys.executable, "-m", "metarl", "train", str(ROOT / "configs" / "navigation-maml.yaml"),
                           "train.device=cuda", f"run.dir={tmp_path / 'run'}", "logging.wandb.mode=disabled"],
                          capture_output=True, text=True, timeout=120, env=checkout_env())
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "train.device = 'cuda', but this torch build sees no CUDA device" in done.stderr


@pytest.mark.slow
def test_cpu_and_auto_without_a_gpu_give_the_default_run_bit_for_bit(tiny, tmp_path):
    """Where torch sees no GPU, 'auto' is the CPU; an explicit 'cpu' changes nothing either."""
    default = trained(tiny, tmp_path, "default", None)
    for device in ("cpu", "auto") if not torch.cuda.is_available() else ("cpu",):
        metrics, params = trained(tiny, tmp_path, device, device)
        assert metrics == default[0]
        assert all(torch.equal(params[k], default[1][k]) for k in params)


def test_device_helpers_move_every_tensor():
    meta = torch.device("meta")  # a device without data: where each tensor goes is all that is checked
    tree = {"a": torch.zeros(2), "b": [torch.ones(1), (torch.ones(3), 4)], "c": "text"}
    moved = on_device(tree, meta)
    assert moved["a"].device == meta and moved["b"][0].device == meta and moved["b"][1][0].device == meta
    assert moved["b"][1][1] == 4 and moved["c"] == "text" and isinstance(moved["b"][1], tuple)
    episodes = Episodes(torch.zeros(2, 1, 1, 3), torch.zeros(2, 1, 1), torch.zeros(2, 1, 1), torch.ones(2, 1, 1),
                        torch.zeros(2, 1, 1))
    assert {t.device for t in vars(episodes.to(device=meta)).values()} == {meta}
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_a_run_on_cuda_trains_checkpoints_and_evaluates(tiny, tmp_path):
    """On a GPU: parameters live on it, files hold CPU tensors, and the run follows the CPU run
    closely (not bit for bit: other kernels round differently)."""
    metrics, params = trained(tiny, tmp_path, "cuda", "cuda")
    cpu_metrics, cpu_params = trained(tiny, tmp_path, "cpu", "cpu")
    assert all(v.device.type == "cpu" for v in params.values())
    checkpoint = load_latest_checkpoint(tmp_path / "cuda")
    assert all(v.device.type == "cpu" for v in checkpoint.state["params"].values())
    assert metrics[0]["return_pre"] == cpu_metrics[0]["return_pre"]  # the same CPU rollouts of the same parameters
    assert all(abs(r["return_post"]) < float("inf") for r in metrics)
    with MetaTrainer(tiny(train={"device": "cuda"}), params) as trainer:
        assert all(v.device.type == "cuda" for v in trainer.params.values())
        trainer.step()
    assert (tmp_path / "cuda" / "evaluation.json").exists()


@pytest.mark.slow
def test_a_run_trained_on_cuda_evaluates_on_a_machine_without_one(tiny, tmp_path):
    """Run files hold CPU tensors and evaluation runs where the parameters are: a run whose config
    says cuda is evaluated here, on the CPU, to the same numbers as its CPU twin."""
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"tasks": 4, "steps": 1, "at_end": False}), progress=False)
    config = (run_dir / "config.yaml").read_text()
    assert "device: cpu" in config
    twin = tmp_path / "twin"
    twin.mkdir()
    for name in ("params.pt", "metrics.jsonl"):
        (twin / name).write_bytes((run_dir / name).read_bytes())
    (twin / "config.yaml").write_text(config.replace("device: cpu", "device: cuda"))
    outputs = []
    for directory in (run_dir, twin):
        done = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(directory), "--quiet"],
                              capture_output=True, text=True, timeout=120, env=checkout_env())
        assert done.returncode == 0, done.stderr
        outputs.append((directory / "evaluation.json").read_text())
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_a_run_continues_on_another_device_setting(tiny, tmp_path):
    """train.device may change on resume (a GPU run continued without one); here 'auto' on a CPU-only
    machine continues a 'cpu' run to the numbers of a run planned longer."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine 'auto' is CUDA, which continues closely but not bit for bit")
    short, whole = tmp_path / "short", tmp_path / "whole"
    common = {"evaluation": {"at_end": False}, "outer": {"kind": "trpo"}}
    run_training(tiny(run={"dir": str(short)}, train={"iterations": 2}, **common), progress=False)
    run_training(load_config(short / "config.yaml", ["train.iterations=3", "train.device=auto"]), progress=False,
                 resume=short)
    run_training(tiny(run={"dir": str(whole)}, train={"iterations": 3}, **common), progress=False)
    assert without_times(read_metrics(short / "metrics.jsonl")) == without_times(read_metrics(whole / "metrics.jsonl"))
    assert load_config(short / "config.yaml").train.device == "auto"
