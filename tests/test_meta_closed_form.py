"""Meta-gradient estimators against closed-form MAML gradients.

Each check averages R independent estimates (replicas along the oracle's task axis) and
requires every coordinate of the mean to lie within 4 standard errors of the exact value.
The estimators are biased only through the inner step's noise, as the papers say: J is not
linear, so ``E[grad J(theta + alpha * g_hat)] != grad J(theta + alpha * g)`` (order
alpha^2 Var(g_hat), any batch), and with a *shared* Hessian batch the curvature estimate is
correlated with the inner step (order alpha^2 Cov(H_hat, g_hat), which is 1/M in the batch size
M). Each check uses batch sizes at which that bias is below one standard error (measured on
the bandit: the shared-batch bias of d/ds is about -56/M, the standard error
0.47 / sqrt(R M)); the power checks show that the comparison does detect a real difference.
"""

from __future__ import annotations

import pytest
import torch

from metarl.estimators.meta_gradient import estimate_meta_gradient, meta_gradient
from metarl.estimators.synthetic import MatrixFactorisationOracle, factorisation_objective
from tests.closed_form import GaussianBandit, LinearQuadraticControl, exact_maml_gradient

STANDARD_ERRORS = 4.0
ALPHA = 0.1
GOAL = torch.tensor([1.0, 0.5], dtype=torch.float64)
THETA = {"mu": torch.tensor([0.3, -0.2], dtype=torch.float64), "s": torch.tensor([-0.5, 0.2], dtype=torch.float64)}
LQR_THETA = {
    "mean_net.0.weight": torch.tensor([[-0.3, -0.5]], dtype=torch.float64),
    "mean_net.0.bias": torch.tensor([0.1], dtype=torch.float64),
    "log_std": torch.tensor([-0.7], dtype=torch.float64),
}


def replicate(params: dict[str, torch.Tensor], replicas: int) -> dict[str, torch.Tensor]:
    return {k: v.unsqueeze(0).repeat(replicas, *([1] * v.dim())) for k, v in params.items()}


def tasks(g: torch.Tensor, replicas: int) -> torch.Tensor:
    """``replicas`` copies of the task vector ``g`` along the task axis."""
    return g.expand(replicas, -1).clone()


def z_scores(estimates: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> torch.Tensor:
    """|mean - exact| / standard error, for every coordinate."""
    scores = []
    for k, est in estimates.items():
        stderr = est.std(0) / est.shape[0] ** 0.5
        scores.append(((est.mean(0) - exact[k]).abs() / stderr).flatten())
    return torch.cat(scores)


def bandit_estimates(method: str, steps: int, hessian_batch: str = "shared", seed: int = 0,
                     replicas: int = 2000, samples: int = 500) -> dict[str, torch.Tensor]:
    oracle = GaussianBandit(GOAL, replicas, samples, seed)
    return meta_gradient(method, oracle, replicate(THETA, replicas), inner_lr=ALPHA, inner_steps=steps,
                         hessian_batch=hessian_batch, delta=1e-3)


def bandit_exact(steps: int, first_order: bool = False) -> dict[str, torch.Tensor]:
    return exact_maml_gradient(lambda p: GaussianBandit.exact_objective(p, GOAL), THETA, ALPHA, steps, first_order)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize(
    "method,hessian_batch",
    [("maml", "shared"), ("maml", "independent"), ("hfmaml", "shared"), ("hfmaml", "independent")]
)
def test_second_order_estimators_are_unbiased_for_maml_gradient(method: str, hessian_batch: str, steps: int) -> None:
    # Fewer replicas with larger batches for the shared batch, whose correlation bias is 1/M.
    replicas, samples = (300, 8000) if hessian_batch == "shared" else (2000, 500)
    estimates = bandit_estimates(method, steps, hessian_batch, seed=steps, replicas=replicas, samples=samples)
    assert z_scores(estimates, bandit_exact(steps)).max() < STANDARD_ERRORS


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
def test_fomaml_is_unbiased_for_first_order_quantity(steps: int) -> None:
    estimates = bandit_estimates("fomaml", steps, seed=10 + steps)
    assert z_scores(estimates, bandit_exact(steps, first_order=True)).max() < STANDARD_ERRORS


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
def test_comparison_has_power_fomaml_misses_maml_gradient(steps: int) -> None:
    estimates = bandit_estimates("fomaml", steps, seed=20 + steps)
    assert z_scores(estimates, bandit_exact(steps)).max() > 3 * STANDARD_ERRORS


def test_bandit_hessian_is_not_constant() -> None:
    def hessian_at(s: float) -> torch.Tensor:
        flat = torch.cat([THETA["mu"], torch.full((2,), s, dtype=torch.float64)])
        return torch.autograd.functional.hessian(
            lambda v: GaussianBandit.exact_objective({"mu": v[:2], "s": v[2:]}, GOAL), flat
        )

    assert not torch.allclose(hessian_at(-0.5), hessian_at(0.3))


def test_hfmaml_matches_maml_on_a_shared_batch() -> None:
    """On the same data, the finite difference of the IS gradients is the DiCE Hessian product."""
    results = {}
    for method in ("maml", "hfmaml"):
        oracle = GaussianBandit(GOAL, replicas=4, samples=200, seed=7)
        results[method] = meta_gradient(method, oracle, replicate(THETA, 4), inner_lr=ALPHA, inner_steps=2, delta=1e-4)
    for k in results["maml"]:
        torch.testing.assert_close(results["hfmaml"][k], results["maml"][k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["maml", "hfmaml", "fomaml"])
def test_supervised_oracle_matrix_factorisation(method: str) -> None:
    g = torch.tensor([1.0, -0.5, 0.8], dtype=torch.float64)
    theta = {"x": torch.tensor([0.6, 0.1, -0.3], dtype=torch.float64)}
    alpha, replicas = 0.05, 4000
    oracle = MatrixFactorisationOracle(tasks(g, replicas), sigma_g=0.05, sigma_h=0.05, seed=3)
    estimates = meta_gradient(method, oracle, replicate(theta, replicas), inner_lr=alpha, inner_steps=2,
                              hessian_batch="independent", delta=1e-4)
    exact = exact_maml_gradient(lambda p: factorisation_objective(p["x"], g), theta, alpha, 2,
                                first_order=method == "fomaml")
    assert z_scores(estimates, exact).max() < STANDARD_ERRORS


def test_task_axis_gives_the_same_per_task_estimates_as_single_tasks() -> None:
    """Batching tasks along the task axis changes nothing per task (HF-MAML's norms are per task)."""
    g = torch.tensor([1.0, -0.5], dtype=torch.float64)
    starts = torch.tensor([[0.6, 0.1], [-0.2, 0.9], [1.5, -1.0]], dtype=torch.float64)
    batched = meta_gradient("hfmaml", MatrixFactorisationOracle(tasks(g, 3), 0.0, 0.0, seed=0), {"x": starts},
                            inner_lr=0.1, inner_steps=2)
    for i in range(3):
        single = meta_gradient("hfmaml", MatrixFactorisationOracle(tasks(g, 1), 0.0, 0.0, seed=0),
                               {"x": starts[i:i + 1]}, inner_lr=0.1, inner_steps=2)
        torch.testing.assert_close(batched["x"][i], single["x"][0])


def test_inverse_steps_rule_divides_the_inner_step() -> None:
    g = torch.tensor([1.0, -0.5], dtype=torch.float64)
    theta = {"x": torch.tensor([[0.6, 0.1]], dtype=torch.float64)}
    oracle = MatrixFactorisationOracle(tasks(g, 1), 0.0, 0.0, seed=0)
    estimate = estimate_meta_gradient("maml", oracle, theta, inner_lr=0.3, inner_steps=3, step_rule="inverse_steps")
    exact = exact_maml_gradient(lambda p: factorisation_objective(p["x"], g), {"x": theta["x"][0]}, 0.1, 3)
    torch.testing.assert_close(estimate.direction["x"][0], exact["x"])


def test_hfmaml_theory_delta_rule_needs_rho_and_works_with_it() -> None:
    g = torch.tensor([1.0, -0.5], dtype=torch.float64)
    theta = {"x": torch.tensor([[0.6, 0.1]], dtype=torch.float64)}
    oracle = MatrixFactorisationOracle(tasks(g, 1), 0.0, 0.0, seed=0)
    with pytest.raises(ValueError, match="rho"):
        meta_gradient("hfmaml", oracle, theta, inner_lr=0.1, delta_rule="theory")
    # rho large makes delta small; the finite difference then equals the exact product closely.
    result = meta_gradient("hfmaml", oracle, theta, inner_lr=0.1, delta_rule="theory", rho=1e4)
    exact = exact_maml_gradient(lambda p: factorisation_objective(p["x"], g), {"x": theta["x"][0]}, 0.1, 1)
    torch.testing.assert_close(result["x"][0], exact["x"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"method": "sgd"}, "method"), ({"inner_steps": 0}, "inner_steps"), ({"hessian_batch": "both"}, "hessian_batch"),
     ({"delta": 0.0}, "delta"), ({"difference": "backward"}, "finite difference")],
)
def test_bad_options_are_named(kwargs: dict, match: str) -> None:
    oracle = MatrixFactorisationOracle(tasks(torch.ones(2, dtype=torch.float64), 1), 0.0, 0.0, seed=0)
    method = kwargs.pop("method", "hfmaml")
    with pytest.raises(ValueError, match=match):
        meta_gradient(method, oracle, {"x": torch.ones(1, 2, dtype=torch.float64)}, inner_lr=0.1, **kwargs)


def test_hfmaml_with_a_zero_direction_gives_zero_not_nan():
    """A task whose outer gradient is exactly zero (sparse reward, no success) contributes zero."""
    g = torch.zeros(2, dtype=torch.float64)
    theta = {"x": torch.zeros(2, 2, dtype=torch.float64)}  # x = 0 is stationary when g = 0
    for rule, rho in (("scaled", None), ("theory", 1e-2)):
        result = meta_gradient("hfmaml", MatrixFactorisationOracle(tasks(g, 2), 0.0, 0.0, seed=0), theta, inner_lr=0.1,
                               delta_rule=rule, rho=rho)
        assert torch.equal(result["x"], torch.zeros(2, 2, dtype=torch.float64))


def test_per_task_norm_handles_scalar_parameters():
    from metarl.params import tree_norm

    norms = tree_norm({"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0], [2.0]])}, task_axis=True)
    torch.testing.assert_close(norms, torch.tensor([5.0, 2.0]))


# --- Linear-quadratic control: multi-step episodes through metarl's own surrogates -------------


def lqr_estimates(method: str, steps: int, hessian_batch: str, seed: int, replicas: int, episodes: int,
                  surrogate: str = "dice") -> dict[str, torch.Tensor]:
    oracle = LinearQuadraticControl(replicas, episodes, seed, surrogate=surrogate)
    return meta_gradient(method, oracle, replicate(LQR_THETA, replicas), inner_lr=ALPHA, inner_steps=steps,
                         hessian_batch=hessian_batch)


def lqr_exact(steps: int, first_order: bool = False) -> dict[str, torch.Tensor]:
    return exact_maml_gradient(LinearQuadraticControl(1, 1, 0).exact_objective, LQR_THETA, ALPHA, steps, first_order)


def test_lqr_closed_form_matches_monte_carlo_return() -> None:
    """The closed-form J is the expected discounted return of the simulated episodes."""
    oracle = LinearQuadraticControl(replicas=10, episodes=5000, seed=0)
    batch = oracle.sample(replicate(LQR_THETA, 10))
    returns = (batch.discounts * batch.episodes.rewards).sum(0)
    stderr = returns.std() / returns.numel() ** 0.5
    assert abs(returns.mean() - oracle.exact_objective(LQR_THETA)) < STANDARD_ERRORS * stderr


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize(
    "method,hessian_batch",
    [("maml", "shared"), ("maml", "independent"), ("hfmaml", "shared"), ("hfmaml", "independent")]
)
def test_lqr_second_order_estimators_are_unbiased_for_maml_gradient(method: str, hessian_batch: str,
                                                                    steps: int) -> None:
    # The shared batch's correlation bias is about 8/M per coordinate here (measured with 4000
    # replicas at M = 100 and 1000 at M = 400); M = 4000 puts it below a third of a standard error.
    replicas, episodes = (150, 4000) if hessian_batch == "shared" else (1000, 500)
    estimates = lqr_estimates(method, steps, hessian_batch, seed=30 + steps, replicas=replicas, episodes=episodes)
    assert z_scores(estimates, lqr_exact(steps)).max() < STANDARD_ERRORS


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
def test_lqr_fomaml_is_unbiased_for_first_order_quantity_and_misses_maml(steps: int) -> None:
    estimates = lqr_estimates("fomaml", steps, "shared", seed=40 + steps, replicas=1000, episodes=500)
    assert z_scores(estimates, lqr_exact(steps, first_order=True)).max() < STANDARD_ERRORS
    assert z_scores(estimates, lqr_exact(steps)).max() > 3 * STANDARD_ERRORS


@pytest.mark.slow
def test_shared_hessian_batch_bias_is_real_and_the_independent_batch_removes_it() -> None:
    """At a small batch (M = 100) the shared batch's bias (about 8/M) is many standard errors."""
    shared = lqr_estimates("maml", 1, "shared", seed=50, replicas=4000, episodes=100)
    independent = lqr_estimates("maml", 1, "independent", seed=51, replicas=4000, episodes=100)
    assert z_scores(shared, lqr_exact(1)).max() > 3 * STANDARD_ERRORS
    assert z_scores(independent, lqr_exact(1)).max() < STANDARD_ERRORS


# --- Which surrogates give unbiased Hessians ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2])
def test_reinforce_hessian_is_biased_and_dice_is_not_on_the_bandit(steps: int) -> None:
    """``sum_t l_t Psi_t`` has the right gradient but its Hessian misses ``E[r grad l grad l^T]``."""
    results = {}
    for surrogate in ("reinforce", "dice"):
        oracle = GaussianBandit(GOAL, 2000, 500, seed=60 + steps, surrogate=surrogate)
        estimates = meta_gradient("maml", oracle, replicate(THETA, 2000), inner_lr=ALPHA, inner_steps=steps,
                                  hessian_batch="independent")
        results[surrogate] = z_scores(estimates, bandit_exact(steps)).max()
    assert results["reinforce"] > 3 * STANDARD_ERRORS
    assert results["dice"] < STANDARD_ERRORS


@pytest.mark.slow
def test_reinforce_hessian_is_biased_and_dice_is_not_over_several_steps() -> None:
    """In a multi-step episode the reinforce Hessian also misses the cross terms between steps."""
    results = {}
    for surrogate in ("reinforce", "dice"):
        estimates = lqr_estimates("maml", 1, "independent", seed=70, replicas=1000, episodes=500, surrogate=surrogate)
        results[surrogate] = z_scores(estimates, lqr_exact(1)).max()
    assert results["reinforce"] > 3 * STANDARD_ERRORS
    assert results["dice"] < STANDARD_ERRORS


@pytest.mark.slow
def test_reinforce_gradient_is_still_unbiased() -> None:
    """The bias is second-order only: FO-MAML with reinforce estimates the first-order quantity."""
    estimates = lqr_estimates("fomaml", 1, "shared", seed=71, replicas=1000, episodes=500, surrogate="reinforce")
    assert z_scores(estimates, lqr_exact(1, first_order=True)).max() < STANDARD_ERRORS


# --- HF-MAML's finite difference --------------------------------------------------------------


def _same_batch_difference(oracle_factory, params, delta: float, difference: str = "central") -> float:
    """||hfmaml - maml|| on identical data: alpha times the finite-difference error."""
    results = [
        meta_gradient(method, oracle_factory(), params, inner_lr=ALPHA, inner_steps=1, delta=delta,
                      difference=difference)
        for method in ("maml", "hfmaml")
    ]
    return float(torch.sqrt(sum(((results[0][k] - results[1][k]) ** 2).sum() for k in params)))


@pytest.mark.parametrize("problem", ["bandit", "lqr"])
def test_hfmaml_central_difference_error_shrinks_as_delta_squared(problem: str) -> None:
    """The central difference of a smooth surrogate errs by delta^2 |D^3 S[u,u,u]| / 6 (third-order
    Taylor term, below Fallah et al.'s ``rho delta ||u||^2 / 2`` bound): a tenfold smaller delta gives a
    hundredfold smaller error, until rounding (about 1e-16 / delta) takes over."""
    if problem == "bandit":
        def factory():
            return GaussianBandit(GOAL, 4, 200, seed=80)
        params = replicate(THETA, 4)
    else:
        def factory():
            return LinearQuadraticControl(4, 200, seed=81)
        params = replicate(LQR_THETA, 4)
    errors = [_same_batch_difference(factory, params, delta) for delta in (1e-1, 1e-2, 1e-3)]
    assert errors[0] > 0
    for coarse, fine in zip(errors, errors[1:]):
        assert 70 < coarse / fine < 130, errors


def test_hfmaml_forward_difference_error_shrinks_as_delta() -> None:
    """The forward difference errs by delta |D^3 S[u,u,.]| / 2: tenfold smaller delta, tenfold smaller error."""
    errors = [_same_batch_difference(lambda: GaussianBandit(GOAL, 4, 200, seed=82), replicate(THETA, 4), delta,
                                     difference="forward") for delta in (1e-1, 1e-2, 1e-3)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 7 < coarse / fine < 13, errors


@pytest.mark.slow
@pytest.mark.parametrize("hessian_batch", ["shared", "independent"])
def test_hfmaml_forward_difference_is_unbiased_for_maml_gradient(hessian_batch: str) -> None:
    replicas, samples = (300, 8000) if hessian_batch == "shared" else (2000, 500)
    oracle = GaussianBandit(GOAL, replicas, samples, seed=83)
    estimates = meta_gradient("hfmaml", oracle, replicate(THETA, replicas), inner_lr=ALPHA, inner_steps=2,
                              hessian_batch=hessian_batch, delta=1e-4, difference="forward")
    assert z_scores(estimates, bandit_exact(2)).max() < STANDARD_ERRORS


class CountingOracle(MatrixFactorisationOracle):
    """Counts objective evaluations (one per gradient in the estimators)."""

    calls = 0

    def objective(self, params, batch):
        self.calls += 1
        return super().objective(params, batch)


@pytest.mark.parametrize(
    "method,difference,hessian_batch,expected",
    [("fomaml", "central", "shared", 4), ("hfmaml", "central", "shared", 10), ("hfmaml", "forward", "shared", 7),
     ("hfmaml", "forward", "independent", 10), ("maml", "central", "shared", 4)],
)
def test_gradient_evaluations_per_estimate(method: str, difference: str, hessian_batch: str, expected: int) -> None:
    """Three inner steps: FO-MAML takes N + 1 gradients; HF-MAML's central difference 2 more per step,
    its forward difference on a shared batch 1 more (it reuses the inner step's gradient); MAML's
    double backward differentiates the N + 1 retained graphs."""
    oracle = CountingOracle(tasks(torch.ones(2, dtype=torch.float64), 2), 0.1, 0.1, seed=0)
    meta_gradient(method, oracle, {"x": torch.ones(2, 2, dtype=torch.float64)}, inner_lr=0.1, inner_steps=3,
                  hessian_batch=hessian_batch, difference=difference)
    assert oracle.calls == expected


class _Quadratic:
    """Deterministic objective ``-0.5 ||x - target||^2`` (no data): gradient steps in closed form."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def sample(self, params):
        return None

    def objective(self, params, batch):
        return -0.5 * (params["x"] - self.target).pow(2).sum()


@pytest.mark.parametrize(("first", "scale"), [(1.0, 1.0), (1.0, 0.5), (0.5, 0.5), (0.25, 1.0)])
def test_adapt_takes_the_first_and_later_steps_at_their_scales(first: float, scale: float) -> None:
    """``x_{k+1} = x_k + alpha_k (target - x_k)``: ``x_k - target = (x_0 - target) prod_j (1 - alpha_j)``
    with ``alpha_0 = first * alpha`` and ``alpha_j = scale * alpha`` after."""
    from metarl.estimators.meta_gradient import adapt

    target, start, alpha = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]), 0.3
    thetas, batches = adapt(_Quadratic(target), {"x": start}, inner_lr=alpha, steps=3, later_step_scale=scale,
                            first_step_scale=first)
    assert len(thetas) == len(batches) == 4
    factor = 1.0
    for k, theta in enumerate(thetas):
        torch.testing.assert_close(theta["x"] - target, (start - target) * factor)
        factor *= 1 - (first if k == 0 else scale) * alpha
