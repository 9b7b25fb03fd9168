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

from metarl.meta import estimate_meta_gradient, meta_gradient
from metarl.synthetic import MatrixFactorisationOracle, factorisation_objective
from tests.closed_form import GaussianBandit, exact_maml_gradient

STANDARD_ERRORS = 4.0
ALPHA = 0.1
GOAL = torch.tensor([1.0, 0.5], dtype=torch.float64)
THETA = {"mu": torch.tensor([0.3, -0.2], dtype=torch.float64), "s": torch.tensor([-0.5, 0.2], dtype=torch.float64)}


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


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize(
    "method,hessian_batch", [("maml", "shared"), ("maml", "independent"), ("hfmaml", "shared"), ("hfmaml", "independent")]
)
def test_second_order_estimators_are_unbiased_for_maml_gradient(method: str, hessian_batch: str, steps: int) -> None:
    # Fewer replicas with larger batches for the shared batch, whose correlation bias is 1/M.
    replicas, samples = (300, 8000) if hessian_batch == "shared" else (2000, 500)
    estimates = bandit_estimates(method, steps, hessian_batch, seed=steps, replicas=replicas, samples=samples)
    assert z_scores(estimates, bandit_exact(steps)).max() < STANDARD_ERRORS


@pytest.mark.parametrize("steps", [1, 2])
def test_fomaml_is_unbiased_for_first_order_quantity(steps: int) -> None:
    estimates = bandit_estimates("fomaml", steps, seed=10 + steps)
    assert z_scores(estimates, bandit_exact(steps, first_order=True)).max() < STANDARD_ERRORS


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
        single = meta_gradient("hfmaml", MatrixFactorisationOracle(tasks(g, 1), 0.0, 0.0, seed=0), {"x": starts[i:i + 1]},
                               inner_lr=0.1, inner_steps=2)
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
     ({"delta": 0.0}, "delta")],
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
    from metarl.meta import tree_norm

    norms = tree_norm({"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0], [2.0]])}, task_axis=True)
    torch.testing.assert_close(norms, torch.tensor([5.0, 2.0]))
