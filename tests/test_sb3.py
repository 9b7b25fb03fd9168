"""Stable-Baselines3 interoperability: export an adapted policy as a PPO model, meta-train from an SB3 actor."""

import base64
import json
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import MissingDependencyError
from metarl.cli import build_parser, main
from metarl.experiment.build import build_family, build_policy
from metarl.experiment.checkpoint import list_checkpoints
from metarl.experiment.config import dump_config, load_config
from metarl.experiment.evaluation import check_task
from metarl.experiment.run_dir import PARAMS_FILE, load_params, save_params
from metarl.experiment.trainer import MetaTrainer, run_training
from metarl.integrations.sb3 import adapt_to_task, export_sb3, to_sb3
from metarl.rl.policies import CategoricalMLPPolicy
from metarl.rl.sb3_weights import actor_params
from tests.helpers import ROOT, TINY

try:
    import cloudpickle
    from stable_baselines3 import A2C, PPO
except ImportError:
    A2C = PPO = None

needs_sb3 = pytest.mark.skipif(PPO is None, reason='stable-baselines3 is not installed: pip install -e ".[sb3]"')
TASK = {"goal": [0.3, -0.2]}
# The SB3 names of a two-hidden-layer actor, written out rather than taken from metarl.integrations.sb3.
SB3_NAMES = {
    "mean_net.0.weight": "mlp_extractor.policy_net.0.weight", "mean_net.0.bias": "mlp_extractor.policy_net.0.bias",
    "mean_net.2.weight": "mlp_extractor.policy_net.2.weight", "mean_net.2.bias": "mlp_extractor.policy_net.2.bias",
    "mean_net.4.weight": "action_net.weight", "mean_net.4.bias": "action_net.bias", "log_std": "log_std",
}


def observations(n: int = 100, dim: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(-10.0, 10.0, (n, dim)).astype(np.float32)  # wide: actions get clipped


def clipped_mean(policy, params, obs: np.ndarray) -> np.ndarray:
    """metarl's deterministic action, clipped to the navigation action space as SB3 clips it."""
    with torch.no_grad():
        mean = policy.mode({k: v.float() for k, v in params.items()}, torch.as_tensor(obs))
    return mean.clamp(-1.0, 1.0).numpy()


def sb3_config(tiny, path, **policy):
    return tiny(policy={"hidden_sizes": [16, 16], "activation": "tanh", "init_from": str(path), **policy})


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A run directory with meta-parameters whose means leave the action bounds (so clipping shows)."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tiny(policy={"hidden_sizes": [8]})
    generator = torch.Generator().manual_seed(0)
    params = {k: v + 0.5 * torch.randn(v.shape, generator=generator) for k, v in MetaTrainer(config).params.items()}
    (run_dir / "config.yaml").write_text(dump_config(config))
    save_params(params, run_dir / PARAMS_FILE)
    return run_dir


def saved_sb3_model(tiny, tmp_path, algorithm=None, env_kwargs=None, **policy_kwargs):
    family = build_family(tiny(env={"kwargs": {"horizon": 10, **(env_kwargs or {})}}))
    policy_kwargs = {"net_arch": [16, 16], **policy_kwargs}
    model = (algorithm or PPO)("MlpPolicy", family.make_env(TASK), policy_kwargs=policy_kwargs, seed=1, device="cpu")
    path = tmp_path / f"{type(model).__name__}.zip"
    model.save(path)
    return model, path


@needs_sb3
@pytest.mark.parametrize("steps", [0, 1])
def test_exported_model_acts_like_the_adapted_policy(tiny, run_dir, tmp_path, steps):
    config = tiny(policy={"hidden_sizes": [8]})
    policy = build_policy(config, build_family(config))
    meta_params = load_params(run_dir / PARAMS_FILE)
    path = export_sb3(run_dir, TASK, steps=steps, path=tmp_path / "model")
    assert path == tmp_path / "model.zip"
    model = PPO.load(path, device="cpu")
    assert model.policy.net_arch == {"pi": [8], "vf": [8]} and model.policy.activation_fn is torch.nn.ReLU
    adapted = adapt_to_task(config, meta_params, TASK, steps)
    obs = observations()
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, clipped_mean(policy, adapted, obs), atol=1e-5)
    assert np.abs(policy.mode(adapted, torch.as_tensor(obs)).detach().numpy()).max() > 1.0  # clipping was exercised
    assert torch.allclose(model.policy.log_std.detach(), adapted["log_std"].float())
    assert all(torch.equal(adapted[k], meta_params[k]) for k in meta_params) == (steps == 0)


@needs_sb3
def test_exported_model_trains_with_sb3(tiny, run_dir, tmp_path):
    path = export_sb3(run_dir, TASK, steps=0, path=tmp_path / "model.zip")
    env = build_family(tiny()).make_env(TASK)
    model = PPO.load(path, env=env, device="cpu", custom_objects={"n_steps": 64, "batch_size": 32})
    before = model.policy.action_net.weight.detach().clone()
    model.learn(256)
    assert model.num_timesteps == 256 and not torch.equal(before, model.policy.action_net.weight)


@needs_sb3
def test_task_seed_draws_a_task_of_the_family(run_dir, tmp_path):
    a = export_sb3(run_dir, steps=0, path=tmp_path / "a.zip", task_seed=5)
    assert PPO.load(a, device="cpu").policy.log_std.shape == (2,)
    with pytest.raises(ValueError, match="exactly one"):
        export_sb3(run_dir, TASK, path=tmp_path / "b.zip", task_seed=5)


@needs_sb3
@pytest.mark.parametrize("algorithm", ["PPO", "A2C"])
def test_meta_training_starts_from_an_sb3_actor(tiny, tmp_path, algorithm):
    model, path = saved_sb3_model(tiny, tmp_path, {"PPO": PPO, "A2C": A2C}[algorithm])
    trainer = MetaTrainer(sb3_config(tiny, path))
    sb3_state = model.policy.state_dict()
    for name, sb3_name in SB3_NAMES.items():
        assert torch.equal(trainer.params[name], sb3_state[sb3_name]), name
    trainer.train(1, progress=False)
    assert not torch.equal(trainer.params["mean_net.0.weight"], sb3_state[SB3_NAMES["mean_net.0.weight"]])
    env = build_family(tiny()).make_env(TASK)
    to_sb3(trainer.policy, trainer.params, env).save(tmp_path / "exported.zip")
    exported = PPO.load(tmp_path / "exported.zip", device="cpu")
    obs = observations()
    np.testing.assert_allclose(exported.predict(obs, deterministic=True)[0],
                               clipped_mean(trainer.policy, trainer.params, obs), atol=1e-5)


@pytest.mark.slow
@needs_sb3
def test_resume_reads_the_checkpoint_not_the_sb3_model(tiny, tmp_path):
    _, path = saved_sb3_model(tiny, tmp_path)
    config = sb3_config(tiny, path)
    config.run.dir, config.checkpoint.every, config.evaluation.at_end = str(tmp_path / "run"), 1, False
    run_dir, _ = run_training(config, progress=False)
    whole = load_params(run_dir / PARAMS_FILE)
    assert [iteration for iteration, _ in list_checkpoints(run_dir)] == [1, 2]
    list_checkpoints(run_dir)[-1][1].unlink()  # as if killed during iteration 2
    path.unlink()
    run_training(config, progress=False, resume=run_dir)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = load_params(run_dir / PARAMS_FILE)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.slow
@needs_sb3
def test_cli_trains_from_an_sb3_model_and_reports_a_mismatch(tiny, run_metarl, tmp_path, capsys):
    model, path = saved_sb3_model(tiny, tmp_path, activation_fn=torch.nn.ReLU)
    args = ["train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, "train.iterations=0", "evaluation.at_end=false",
            f"policy.init_from={path}", "--quiet"]
    result = run_metarl(*args, "policy.hidden_sizes=[16, 16]", f"run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    params, sb3_state = load_params(tmp_path / "run" / PARAMS_FILE), model.policy.state_dict()
    assert all(torch.equal(params[name], sb3_state[sb3_name]) for name, sb3_name in SB3_NAMES.items())

    assert main([*args, "policy.hidden_sizes=[8]", f"run.dir={tmp_path / 'other'}"]) == 2
    error = capsys.readouterr().err
    assert "hidden sizes [16, 16]" in error and "policy.hidden_sizes = [8]" in error
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
@needs_sb3
def test_cli_export_end_to_end(run_metarl, tmp_path, capsys):
    run_dir = tmp_path / "run"
    result = run_metarl("train", str(ROOT / "configs/navigation-maml.yaml"), *TINY, "policy.hidden_sizes=[8]",
                        "evaluation.at_end=false", f"run.dir={run_dir}", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_metarl("export", str(run_dir), "--task", "{goal: [0.3, -0.2]}", "--format", "sb3", "--out",
                        "model.zip", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote model.zip" in result.stdout
    config = load_config(run_dir / "config.yaml")
    policy = build_policy(config, build_family(config))
    adapted = adapt_to_task(config, load_params(run_dir / PARAMS_FILE), TASK, steps=1)
    obs = observations()
    np.testing.assert_allclose(PPO.load(tmp_path / "model.zip", device="cpu").predict(obs, deterministic=True)[0],
                               clipped_mean(policy, adapted, obs), atol=1e-5)

    bad = tmp_path / "bad.zip"
    assert main(["export", str(run_dir), "--task", "{goal: [1, 2, 3]}", "--format", "sb3", "--out", str(bad)]) == 2
    assert "needs shape (2,)" in capsys.readouterr().err and not bad.exists()


@needs_sb3
def test_discrete_actions_export_as_a_categorical_actor(tmp_path):
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(4, 2, (8,))
    params = {k: v + torch.randn_like(v) for k, v in policy.init_params().items()}
    to_sb3(policy, params, env).save(tmp_path / "cartpole.zip")
    obs = observations(dim=4)
    actions, _ = PPO.load(tmp_path / "cartpole.zip", device="cpu").predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, policy.mode(params, torch.as_tensor(obs)).numpy())
    loaded = actor_params(tmp_path / "cartpole.zip", policy)
    assert all(torch.equal(loaded[k], params[k]) for k in params)


def test_bad_task_specs_name_the_problem(tiny):
    family = build_family(tiny())
    assert check_task(family, TASK) == TASK
    with pytest.raises(ValueError, match=r"unknown keys \['gaol'\], missing keys \['goal'\]"):
        check_task(family, {"gaol": [0.3, -0.2]})
    with pytest.raises(ValueError, match=r"unknown keys \['speed'\]"):
        check_task(family, {**TASK, "speed": 1.0})
    with pytest.raises(ValueError, match=r"task\['goal'\] = \[0.3\]: .* needs shape \(2,\)"):
        check_task(family, {"goal": [0.3]})
    with pytest.raises(ValueError, match="is a mapping with keys"):
        check_task(family, [0.3, -0.2])
    with pytest.raises(ValueError, match="finite"):
        check_task(family, {"goal": [0.3, float("nan")]})


@needs_sb3
def test_sb3_models_that_do_not_fit_are_reported(tiny, tmp_path):
    _, path = saved_sb3_model(tiny, tmp_path)
    with pytest.raises(ValueError, match=r"hidden sizes \[16, 16\] and activation 'tanh'.*policy.hidden_sizes = "
                                         r"\[16\] and policy.activation = 'relu'"):
        MetaTrainer(sb3_config(tiny, path, hidden_sizes=[16], activation="relu"))
    (tmp_path / "oracle").mkdir()
    _, oracle_path = saved_sb3_model(tiny, tmp_path / "oracle", env_kwargs={"oracle": True})
    with pytest.raises(ValueError, match="does not fit the task family's spaces"):
        MetaTrainer(sb3_config(tiny, oracle_path))
    with pytest.raises(ValueError, match="does not exist"):
        MetaTrainer(sb3_config(tiny, tmp_path / "missing.zip"))
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable SB3 model"):
        MetaTrainer(sb3_config(tiny, tmp_path / "junk.zip"))


def test_missing_sb3_says_what_to_install_for_export_and_is_not_needed_to_read_a_model(tiny, run_dir, tmp_path,
                                                                                         monkeypatch):
    if PPO is not None:
        model, path = saved_sb3_model(tiny, tmp_path)
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[sb3\]"'):
        export_sb3(run_dir, TASK, steps=0, path=tmp_path / "model.zip")
    if PPO is not None:
        params = MetaTrainer(sb3_config(tiny, path)).params
        assert all(torch.equal(params[name], model.policy.state_dict()[sb3_name])
                   for name, sb3_name in SB3_NAMES.items())


class Exploit:
    """Unpickling this touches ``marker``: what a crafted SB3 file could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@needs_sb3
def test_a_crafted_sb3_model_runs_no_code(tiny, tmp_path):
    """SB3's loader unpickles the ``:serialized:`` entries of the model's ``data``; metarl must not."""
    model, path = saved_sb3_model(tiny, tmp_path)
    marker = tmp_path / "pwned"
    payload = base64.b64encode(cloudpickle.dumps(Exploit(marker))).decode()
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    for key in ("policy_class", "policy_kwargs", "observation_space", "action_space", "lr_schedule"):
        data[key][":serialized:"] = payload
    entries["data"] = json.dumps(data).encode()
    crafted = tmp_path / "crafted.zip"
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    from stable_baselines3.common.save_util import load_from_zip_file
    load_from_zip_file(tmp_path / "crafted.zip", device="cpu")  # the payload is live: SB3's loader runs it
    assert marker.exists()
    marker.unlink()
    params = MetaTrainer(sb3_config(tiny, crafted)).params  # the weights are read, nothing runs
    assert not marker.exists()
    assert all(torch.equal(params[name], model.policy.state_dict()[sb3_name]) for name, sb3_name in SB3_NAMES.items())
    data["use_sde"] = True
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, content in {**entries, "data": json.dumps(data).encode()}.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="gSDE"):
        MetaTrainer(sb3_config(tiny, crafted))


def test_export_format_other_than_sb3_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["export", "run", "--task", "{goal: [0, 0]}", "--format", "onnx", "--out", "m.onnx"])
    assert exit_info.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err


@needs_sb3
def test_export_to_a_dangling_symlink_or_a_directory_is_refused(run_dir, tmp_path, capsys):
    link = tmp_path / "link.zip"
    link.symlink_to(tmp_path / "missing" / "model.zip")
    (tmp_path / "folder.zip").mkdir()
    for out, problem in ((link, "is a symbolic link to a missing file"), (tmp_path / "folder.zip", "is a directory")):
        args = ["export", str(run_dir), "--task", "{goal: [0.3, -0.2]}", "--format", "sb3", "--out", str(out)]
        assert main(args) == 2
        assert problem in capsys.readouterr().err
