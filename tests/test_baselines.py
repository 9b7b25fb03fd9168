"""The baselines of Finn et al. (pretrained, random, oracle) as configs that train and evaluate."""

import pytest
import torch

from metarl.estimators.meta_gradient import objective_gradient, policy_gradient_estimate
from metarl.experiment.build import build_oracle
from metarl.experiment.config import load_config
from metarl.experiment.evaluation import evaluate
from metarl.experiment.trainer import MetaTrainer
from metarl.params import stack_params
from tests.helpers import ROOT, TINY

SMALL = [arg for arg in TINY if not arg.startswith(("env.kwargs", "train.iterations"))] + ["policy.hidden_sizes=[16]"]


def small(name: str, *overrides: str):
    return load_config(ROOT / f"configs/navigation-{name}.yaml", [*SMALL, *overrides])


@pytest.mark.slow
def test_pretrain_update_is_the_plain_policy_gradient():
    config = small("pretrained", "env.kwargs={horizon: 10}")
    trainer = MetaTrainer(config)
    tasks = trainer.sample_tasks(0)
    stacked = stack_params(trainer.params, len(tasks))
    estimate = policy_gradient_estimate(build_oracle(config, trainer.sampler, tasks, (1, 0)), stacked)
    oracle = build_oracle(config, trainer.sampler, tasks, (1, 0))
    expected = objective_gradient(oracle, stacked, oracle.sample(stacked))
    for k in expected:
        torch.testing.assert_close(estimate.direction[k], expected[k])
    assert torch.equal(estimate.adapted["log_std"], stacked["log_std"])  # nothing adapted


def test_pretrained_baseline_trains_without_adaptation_and_adapts_at_evaluation():
    trainer = MetaTrainer(small("pretrained", "env.kwargs={horizon: 10}"))
    before = {k: v.clone() for k, v in trainer.params.items()}
    records = [trainer.step() for _ in range(2)]
    assert all(r["return_pre"] == r["return_post"] for r in records)  # one batch, no adaptation
    assert any(not torch.equal(before[k], trainer.params[k]) for k in before)
    result = evaluate(trainer.config, trainer.params, num_tasks=3, steps=1)
    assert result.steps == [0, 1] and result.mean_return[0] != result.mean_return[1]


@pytest.mark.slow
def test_random_baseline_is_the_untrained_initialisation(run_metarl, tmp_path):
    run_dir = tmp_path / "random"
    result = run_metarl("train", str(ROOT / "configs/navigation-random.yaml"), *SMALL, "env.kwargs={horizon: 10}",
                        "evaluation.tasks=3", "evaluation.steps=1", f"run.dir={run_dir}", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "metrics.jsonl").read_text() == ""
    config = small("random", "env.kwargs={horizon: 10}")
    initial = MetaTrainer(config).params
    for k, v in torch.load(run_dir / "params.pt").items():
        assert torch.equal(v, initial[k])


def test_oracle_baseline_sees_the_goal_and_needs_no_adaptation():
    shipped = load_config(ROOT / "configs/navigation-oracle.yaml")
    assert shipped.evaluation.steps == 0 and shipped.env.kwargs["oracle"] is True
    config = small("oracle", "env.kwargs={horizon: 10, oracle: true}")
    trainer = MetaTrainer(config)
    assert trainer.params["mean_net.0.weight"].shape[1] == 4  # position and goal
    trainer.step()
    result = evaluate(config, trainer.params, num_tasks=3, steps=shipped.evaluation.steps)
    assert result.steps == [0]


def test_pretrain_with_the_adaptive_step_needs_its_constant():
    from metarl.experiment.config import ConfigError

    with pytest.raises(ConfigError, match="needs outer.c"):
        small("pretrained", "outer.kind=adaptive_sgd", "outer.smoothness=1.0", "outer.rho=1.0")


def test_plot_draws_an_unadapted_run_as_a_level(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from metarl.experiment.evaluation import EvaluationResult
    from metarl.experiment.plotting import plot_adaptation

    maml = EvaluationResult([0, 1, 2], [-40.0, -12.0, -8.0], [2.0, 1.0, 1.0], 40, 7, 20)
    oracle = EvaluationResult([0], [-2.5], [0.1], 40, 7, 20)
    path = plot_adaptation({"maml": maml, "oracle": oracle}, tmp_path / "curves.png")
    figure = matplotlib.pyplot.gcf()  # closed by plot_adaptation: a fresh, empty figure
    assert path.stat().st_size > 5000 and not figure.axes


LOCOMOTION = ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"]


@pytest.mark.parametrize("family", LOCOMOTION)
def test_every_locomotion_family_ships_the_three_baselines(family):
    """pretrained trains without adaptation, random never trains, oracle sees the task and is not
    adapted; all three share the MAML config's environment and evaluation tasks."""
    maml = load_config(ROOT / f"configs/{family}-maml.yaml")
    pretrained, random, oracle = (load_config(ROOT / f"configs/{family}-{m}.yaml")
                                  for m in ("pretrained", "random", "oracle"))
    assert pretrained.meta.method == "pretrain" and pretrained.train.iterations > 0
    assert random.train.iterations == 0 and random.policy == maml.policy
    assert oracle.env.kwargs["oracle"] is True and oracle.evaluation.steps == 0
    for baseline in (pretrained, random, oracle):
        assert baseline.env.family == maml.env.family
        assert baseline.evaluation.seed == maml.evaluation.seed and baseline.evaluation.tasks == maml.evaluation.tasks


def test_locomotion_oracle_observes_the_task():
    pytest.importorskip("mujoco")
    config = load_config(ROOT / "configs/halfcheetah-vel-oracle.yaml",
                         ["meta.batch_tasks=2", "meta.episodes_per_task=2", "env.kwargs={horizon: 10, oracle: true}",
                          "policy.hidden_sizes=[8]"])
    trainer = MetaTrainer(config)
    assert trainer.params["mean_net.0.weight"].shape[1] == 21  # the 20 observations and the target velocity
    assert trainer.step()["accepted"] is True


@pytest.mark.parametrize("ridge", ["relative", "absolute"])
def test_config_sets_the_linear_value_baselines_ridge(ridge):
    config = small("maml", f"surrogate.baseline_ridge={ridge}")
    with MetaTrainer(config) as trainer:
        assert build_oracle(config, trainer.sampler, trainer.sample_tasks(0), (1, 0)).baseline.ridge == ridge
