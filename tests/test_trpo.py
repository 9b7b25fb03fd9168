"""TRPO outer step: conjugate gradient, the trust-region metrics against dense Hessians, and the
line search's guarantees (KL bound, improvement, rejection of a bad direction)."""

import pytest
import torch

import metarl.outer.trpo as trpo_module
from metarl.estimators.meta_gradient import adapt_on
from metarl.experiment.config import load_config, validate
from metarl.experiment.trainer import MetaTrainer
from metarl.outer.trpo import TRPO, RatioReplay, TrustRegionMetric, conjugate_gradient, first_episodes, task_range
from metarl.params import flatten, stack_params, unflatten
from tests.helpers import ROOT


def trpo_config(**sections):
    data = {"seed": 5, "meta": {"batch_tasks": 3, "episodes_per_task": 4, "inner_lr": 0.1},
            "surrogate": {"kind": "dice", "normalize_advantages": False, "per_step_units": True},
            "env": {"kwargs": {"horizon": 8}}, "train": {"iterations": 3, "dtype": "float64"},
            "policy": {"hidden_sizes": [6], "activation": "tanh", "init_std": 1.0}, "outer": {"kind": "trpo"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return validate(data)


def captured_step(trainer: MetaTrainer):
    """One meta-iteration; returns the parameters before the outer step, the direction, what the
    trainer handed the outer step (the estimate and its oracle) and the iteration's record."""
    seen = {}
    real = trainer.outer.step

    def capture(params, direction, inputs=None):
        seen.update(before={k: v.clone() for k, v in params.items()}, direction=direction, inputs=inputs)
        return real(params, direction, inputs)

    trainer.outer.step = capture
    record = trainer.step()
    trainer.outer.step = real
    return seen["before"], seen["direction"], seen["inputs"], record


def test_conjugate_gradient_solves_a_positive_definite_system_and_returns_its_product():
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    matrix = factor @ factor.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    x, product = conjugate_gradient(lambda v: matrix @ v, b, iterations=10)
    torch.testing.assert_close(x, torch.linalg.solve(matrix, b))
    torch.testing.assert_close(product, matrix @ x)


def _dense_hessian(function, flat):
    return torch.autograd.functional.hessian(function, flat)


@pytest.mark.parametrize("metric_tasks, task_chunk", [(None, None), (None, 2), (2, 1)])
@pytest.mark.parametrize("metric", ["post", "adapted"])
def test_metric_products_are_the_hessian_of_the_mean_kl(metric, metric_tasks, task_chunk):
    """On all tasks, or the mean over the first ``metric_tasks`` only; in one graph or in chunks of tasks."""
    trainer = MetaTrainer(trpo_config(meta={"method": "maml", "inner_steps": 2, "hessian_batch": "independent"}))
    params, _, inputs, _ = captured_step(trainer)
    estimate = inputs.estimate
    oracle, alpha, tasks = inputs.oracle, trainer.outer.inner_lr, 3
    old = {k: v.detach() for k, v in estimate.adapted.items()}
    flat0 = flatten(params).detach()

    def mean_kl(flat):
        theta = unflatten(flat, params)
        if metric == "adapted":
            stacked = {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in theta.items()}
            adapted = adapt_on(oracle, stacked, estimate.inner_batches, alpha, create_graph=True)
        else:  # the adaptation as a fixed shift: J = I
            adapted = {k: old[k] + (theta[k] - params[k]).unsqueeze(0) for k in old}
        return oracle.kl(old, adapted, estimate.outer_batch)[:metric_tasks].mean()

    hessian = _dense_hessian(mean_kl, flat0)
    product = TrustRegionMetric(oracle, params, estimate, alpha, 2, damping=0.0, metric=metric,
                                metric_tasks=metric_tasks, task_chunk=task_chunk)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(flat0.numel(), generator=generator, dtype=torch.float64)
        torch.testing.assert_close(product(v), hessian @ v, rtol=1e-7, atol=1e-10)


def test_the_adapted_metric_differs_from_the_post_adaptation_fisher():
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"}))
    params, direction, inputs, _ = captured_step(trainer)
    estimate = inputs.estimate
    g = flatten(direction)
    post = TrustRegionMetric(inputs.oracle, params, estimate, trainer.outer.inner_lr, 1, 0.0, "post")(g)
    adapted = TrustRegionMetric(inputs.oracle, params, estimate, trainer.outer.inner_lr, 1, 0.0, "adapted")(g)
    assert (post - adapted).norm() > 1e-3 * adapted.norm()


@pytest.mark.parametrize("method", ["maml", "hfmaml"])
@pytest.mark.parametrize("metric", ["post", "adapted"])
def test_step_improves_the_surrogate_within_the_kl_bound(method, metric):
    """MAML's and HF-MAML's directions are (estimates of) the gradient of what the line search
    measures, so a step exists; FO-MAML's is not (see the next test). With the exact (adapted)
    metric the search finds it at once. The post metric ignores the adaptation's Jacobian, so its
    quadratic model can underestimate the KL beyond the 15 backtracking steps: a rejected step must
    change nothing, and one of the next steps must be found."""
    trainer = MetaTrainer(trpo_config(meta={"method": method}, outer={"metric": metric, "max_kl": 0.005}))
    captured_step(trainer)  # one step to leave the initialisation
    for _ in range(3):
        before, _, inputs, record = captured_step(trainer)
        estimate = inputs.estimate
        if record["accepted"] or metric == "adapted":
            break
        assert all(torch.equal(before[k], trainer.params[k]) for k in before)
    assert record["accepted"] is True
    oracle, tasks = inputs.oracle, 3
    adapted = adapt_on(oracle, stack_params(trainer.params, tasks), estimate.inner_batches, trainer.outer.inner_lr)
    with torch.no_grad():
        kl = float(oracle.kl(estimate.adapted, adapted, estimate.outer_batch).mean())
        gain = float(oracle.ratio_objective(adapted, estimate.outer_batch)
                     - oracle.ratio_objective(estimate.adapted, estimate.outer_batch)) / tasks
    assert 0 < kl <= 0.005
    assert kl == pytest.approx(record["kl"])
    assert gain > 0 and gain == pytest.approx(record["improvement"])
    assert any(not torch.equal(before[k], trainer.params[k]) for k in before)


@pytest.mark.parametrize("metric", ["post", "adapted"])
def test_first_order_direction_is_accepted_only_within_the_bound(metric):
    """FO-MAML's direction ignores the adaptation's Jacobian, so it need not improve the re-adapted
    surrogate; whatever happens, an accepted step obeys the bound and a rejected one changes nothing."""
    trainer = MetaTrainer(trpo_config(meta={"method": "fomaml"}, outer={"metric": metric, "max_kl": 0.005}))
    records = []
    for _ in range(3):
        before, _, _, record = captured_step(trainer)
        records.append(record)
        if record["accepted"]:
            assert 0 < record["kl"] <= 0.005 and record["improvement"] > 0
        else:
            assert all(torch.equal(before[k], trainer.params[k]) for k in before)
    assert any(r["accepted"] for r in records)


@pytest.mark.parametrize("metric", ["post", "adapted"])
def test_gradient_direction_steps_along_the_meta_gradient_within_the_bound(metric):
    """``direction = gradient``: the step is a positive multiple of the meta-gradient, no longer than
    the metric's quadratic model puts at max_kl, and obeys the line search's guarantees."""
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"},
                                      outer={"metric": metric, "max_kl": 0.005, "direction": "gradient"}))
    captured_step(trainer)
    before, direction, inputs, record = captured_step(trainer)
    estimate = inputs.estimate
    assert record["accepted"] is True and 0 < record["kl"] <= 0.005 and record["improvement"] > 0
    g = flatten(direction)
    step = flatten(trainer.params) - flatten(before)
    assert torch.nn.functional.cosine_similarity(step, g, dim=0) > 1 - 1e-9
    model = TrustRegionMetric(inputs.oracle, before, estimate, trainer.outer.inner_lr, 1, trainer.outer.cg_damping,
                              metric)
    assert step.norm() <= (2 * 0.005 / (g @ model(g))).sqrt() * g.norm() * (1 + 1e-9)
    natural = MetaTrainer(trpo_config(meta={"method": "maml"}, outer={"metric": metric, "max_kl": 0.005}))
    captured_step(natural)
    before, direction, _, _ = captured_step(natural)
    natural_step = flatten(natural.params) - flatten(before)
    assert torch.nn.functional.cosine_similarity(natural_step, flatten(direction), dim=0) < 0.999


def test_a_direction_that_increases_the_loss_is_rejected_and_parameters_stay():
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"}))
    captured_step(trainer)
    params, direction, inputs, _ = captured_step(trainer)
    outer = TRPO(trainer.outer.inner_lr, 1)
    current = {k: v.clone() for k, v in trainer.params.items()}
    # re-evaluate at the parameters the estimate belongs to, along the negated meta-gradient
    for k in current:
        current[k].copy_(params[k])
    stats = outer.step(current, {k: -v for k, v in direction.items()}, inputs)
    assert stats["accepted"] is False and stats["step_norm"] == 0.0
    assert stats["line_search_steps"] == outer.line_search_steps
    for k in current:
        assert torch.equal(current[k], params[k])


def test_line_search_skips_candidates_predicted_over_the_bound():
    outer = TRPO(0.1, max_kl=0.01, line_search_ratio=0.8)
    assert outer._notches_to_skip(0.005) == 1  # within the bound: the surrogate did not improve
    assert outer._notches_to_skip(0.0101) == 1
    assert outer._notches_to_skip(0.01 / 0.8**4) == 2
    assert outer._notches_to_skip(float("nan")) == 1
    assert outer._first_notch() == 0
    outer.load_state_dict({"kl_scale": 0.01 / (0.8**6 * 0.01) * 1.0001})
    assert outer._first_notch() == 4  # KL model x scale puts 0.8^3 just over the bound
    assert outer.state_dict() == {"kl_scale": pytest.approx(1 / 0.8**6 * 1.0001)}


@pytest.mark.parametrize("line_search", ["predicted", "plain"])
def test_plain_line_search_tries_every_candidate_from_the_full_step(line_search, monkeypatch):
    """Finn et al.'s search: after a step whose KL came out above the model's, ``plain`` still
    starts from the full step, where ``predicted`` starts further down."""
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"}, outer={"metric": "adapted",
                                                                      "line_search": line_search}))
    captured_step(trainer)
    params, direction, inputs, _ = captured_step(trainer)
    outer = trainer.outer
    outer.load_state_dict({"kl_scale": 1 / 0.8**6 * 1.0001})  # the model said 0.8^3 of the KL measured
    tried = []
    real_adapt_on = trpo_module.adapt_on
    monkeypatch.setattr(trpo_module, "adapt_on", lambda *args: tried.append(args) or real_adapt_on(*args))
    for k in params:
        trainer.params[k].data.copy_(params[k])
    stats = outer.step(trainer.params, direction, inputs)
    assert stats["accepted"]
    if line_search == "plain":
        assert outer._first_notch() == 0 and outer._notches_to_skip(1.0) == 1
        assert len(tried) == stats["line_search_steps"]  # every notch up to the accepted one, one at a time
    else:
        assert len(tried) < stats["line_search_steps"] and stats["line_search_steps"] >= 5
    with pytest.raises(ValueError, match="line_search"):
        trpo_config(outer={"line_search": "armijo"})


def test_metric_episodes_keeps_the_first_episodes_of_every_task():
    trainer = MetaTrainer(trpo_config(meta={"method": "fomaml"}))
    _, _, inputs, _ = captured_step(trainer)
    estimate = inputs.estimate
    batch = first_episodes(estimate.outer_batch, 2)
    assert batch.episodes.observations.shape[:3] == (8, 3, 2)
    assert batch.advantages.shape == batch.values.shape == batch.old_log_probs.shape == (8, 3, 2)
    assert torch.equal(batch.episodes.rewards, estimate.outer_batch.episodes.rewards[:, :, :2])
    assert first_episodes(estimate.outer_batch, None) is estimate.outer_batch


def test_metric_task_chunk_from_the_config_takes_the_same_step_as_one_graph():
    """Chunks of tasks change only the products' rounding (float64 here): the same TRPO step."""
    trainers = [MetaTrainer(trpo_config(meta={"method": "maml"}, outer={"metric": "adapted", "metric_task_chunk": c}))
                for c in (None, 1)]
    assert [t.outer.metric_task_chunk for t in trainers] == [None, 1]
    records = [t.step() for t in trainers]
    assert records[0]["accepted"] and records[0]["line_search_steps"] == records[1]["line_search_steps"]
    for k in trainers[0].params:
        torch.testing.assert_close(trainers[1].params[k], trainers[0].params[k], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="metric_task_chunk"):
        trpo_config(outer={"metric_task_chunk": 0})


def test_metric_tasks_keeps_the_first_tasks_and_reaches_trpo_from_the_config():
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"}, outer={"metric": "adapted", "metric_tasks": 2}))
    assert trainer.outer.metric_tasks == 2
    records = [captured_step(trainer)[3] for _ in range(2)]
    _, _, inputs, record = captured_step(trainer)
    estimate = inputs.estimate
    records.append(record)
    # the line search still bounds the KL on every task (a metric on 2 of 3 tasks can miss curvature
    # the third has, and the search then rejects the step: the first two are rejected here)
    assert any(r["accepted"] for r in records) and all(r["kl"] <= trainer.outer.max_kl for r in records)
    batch = task_range(estimate.outer_batch, 0, 2)
    assert batch.episodes.observations.shape[:3] == batch.advantages.shape == (8, 2, 4)
    assert torch.equal(batch.episodes.rewards, estimate.outer_batch.episodes.rewards[:, :2])
    assert torch.equal(batch.scale, estimate.outer_batch.scale[:2])
    with pytest.raises(ValueError, match="metric_tasks"):
        trpo_config(outer={"metric_tasks": 0})


def test_pretrained_baseline_trains_with_plain_trpo():
    trainer = MetaTrainer(trpo_config(meta={"method": "pretrain"}))
    assert trainer.outer.inner_steps == 0
    records = [trainer.step() for _ in range(2)]
    assert any(r["accepted"] for r in records)
    assert all(r["kl"] <= 0.01 for r in records)


def test_trpo_options_are_validated():
    with pytest.raises(ValueError, match="max_kl"):
        trpo_config(outer={"max_kl": 0.0})
    with pytest.raises(ValueError, match="metric"):
        trpo_config(outer={"metric": "exact"})
    with pytest.raises(ValueError, match="line_search_ratio"):
        trpo_config(outer={"line_search_ratio": 1.5})
    with pytest.raises(ValueError, match="direction"):
        trpo_config(outer={"direction": "newton"})
    with pytest.raises(ValueError, match="direction 'newton' is unknown"):
        TRPO(0.1, direction="newton")


def test_ratio_replay_has_the_oracle_gradient_at_the_sampling_parameters():
    """The line search re-adapts with the per-step ratio surrogate: at the parameters the inner batch
    was drawn at, its gradient (the inner step) is DiCE's."""
    trainer = MetaTrainer(trpo_config(meta={"method": "maml"}))
    before, _, inputs, _ = captured_step(trainer)
    estimate = inputs.estimate
    oracle, batch = inputs.oracle, estimate.inner_batches[0]
    params = {k: v.detach().requires_grad_() for k, v in stack_params(before, 3).items()}
    dice = torch.autograd.grad(oracle.objective(params, batch), list(params.values()))
    replay = torch.autograd.grad(RatioReplay(oracle).objective(params, batch), list(params.values()))
    for a, b in zip(dice, replay):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("replay", ["dice", "ratio"])
def test_ratio_replay_accepts_steps_on_long_locomotion_episodes_where_dice_overflows(replay):
    """HalfCheetah, 200 steps of 6 action dimensions: DiCE's episode-long importance weights
    overflow in the replay and every candidate is rejected; the per-step ratio replay accepts."""
    pytest.importorskip("mujoco")
    config = trpo_config(env={"family": "halfcheetah_vel", "kwargs": {"horizon": 200}},
                         meta={"method": "maml", "episodes_per_task": 4}, train={"dtype": "float32"},
                         policy={"hidden_sizes": [32, 32], "activation": "relu"}, outer={"replay": replay})
    trainer = MetaTrainer(config)
    records = [trainer.step() for _ in range(3)]
    if replay == "ratio":
        assert all(r["accepted"] and 0 < r["kl"] <= 0.01 for r in records)
    else:
        assert not any(r["accepted"] for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"])
def test_shipped_locomotion_estimator_takes_accepted_steps_that_move_the_policy(family):
    """The shipped locomotion configs (Finn et al.'s estimator, 200-step episodes): every outer step is
    accepted within the KL bound, improves the measured surrogate, and changes the pre-adaptation
    policy. A surrogate that cannot improve (DiCE's forward value, or its overflowing replay) fails here."""
    pytest.importorskip("mujoco")
    config = load_config(ROOT / "configs" / f"{family}-maml.yaml",
                         ["meta.batch_tasks=2", "meta.episodes_per_task=3", "policy.hidden_sizes=[32,32]",
                          "train.iterations=3", "env.kwargs.threads=1"])
    trainer = MetaTrainer(config)
    for _ in range(3):
        before, _, _, record = captured_step(trainer)
        assert record["accepted"] is True
        assert 0 < record["kl"] <= config.outer.max_kl
        assert record["improvement"] > 0
        assert any(not torch.equal(before[k], trainer.params[k]) for k in before)


def test_trpo_needs_the_estimate_and_its_oracle():
    with pytest.raises(ValueError, match="the oracle that drew its batches"):
        TRPO(0.1).step({"w": torch.zeros(2)}, {"w": torch.ones(2)})
