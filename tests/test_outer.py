import pytest
import torch

from metarl.estimators.synthetic import MatrixFactorisationOracle
from metarl.outer.lipschitz import OnlineLipschitz, secants
from metarl.outer.optimizers import SGD, Adam, AdaptiveSGD, StepInputs


def test_sgd_ascends_along_the_direction():
    params = {"w": torch.tensor([1.0, 2.0])}
    stats = SGD(0.5).step(params, {"w": torch.tensor([2.0, -2.0])})
    assert torch.equal(params["w"], torch.tensor([2.0, 1.0])) and stats["step_size"] == 0.5


def test_adam_ascends_and_anneals_linearly_to_zero():
    params = {"w": torch.zeros(2)}
    adam = Adam(params, lr=0.1, anneal_steps=4)
    sizes = [adam.step(params, {"w": torch.tensor([1.0, -3.0])})["step_size"] for _ in range(5)]
    assert sizes == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0])
    assert params["w"][0] > 0 > params["w"][1]
    restored = Adam({"w": torch.zeros(2)}, lr=0.1, anneal_steps=4)
    restored.load_state_dict(adam.state_dict())
    assert restored.schedule.get_last_lr() == adam.schedule.get_last_lr()


class Cubic:
    """Deterministic oracle ``J(x) = -1/6 sum_i x_i^3 - 1/2 ||x||^2`` over tasks (rows of x).

    ``grad J = -x^2/2 - x``, ``H = -diag(x) - I``: along a coordinate axis the secant of the
    Hessian is exactly 1 (rho), and the gradient secant between a and b on one axis is
    ``|(a + b)/2 + 1|``."""

    task_axis = True

    def __init__(self, tasks: int = 1) -> None:
        self.tasks, self.draws = tasks, 0

    def sample(self, params):
        self.draws += 1
        return None

    def objective(self, params, batch):
        x = params["x"]
        return (-(x**3).sum() / 6) - 0.5 * (x**2).sum()


def draw_cubic(tasks: int = 1):
    oracle = Cubic(tasks)

    def draw(params):
        return oracle, {"x": params["x"].unsqueeze(0).expand(tasks, -1).clone()}
    return draw, oracle


def test_adaptive_sgd_step_is_c_over_lipschitz_estimate():
    params = {"w": torch.zeros(1)}
    seen = []

    class Norm2:
        task_axis = True

        def sample(self, params):
            seen.append(params["w"].clone())

        def objective(self, params, batch):
            return 2.0 * params["w"].sum()  # gradient 2 for the one task: ||grad|| = 2

    def draw(theta):
        return Norm2(), {"w": theta["w"].unsqueeze(0).clone()}

    stats = AdaptiveSGD(c=1 / 12, inner_lr=0.1, smoothness=2.0, rho=5.0).step(params, {"w": torch.ones(1)},
                                                                            StepInputs(independent=draw(params)))
    lipschitz = 4 * 2.0 + 2 * 5.0 * 0.1 * 2.0
    assert stats["lipschitz_estimate"] == pytest.approx(lipschitz)
    assert params["w"].item() == pytest.approx(1 / 12 / lipschitz)
    assert torch.equal(seen[0], torch.zeros(1, 1))  # the norm is taken at theta, before the step


def test_adaptive_sgd_needs_an_independent_batch():
    with pytest.raises(ValueError, match="needs StepInputs.independent"):
        AdaptiveSGD(c=0.1, inner_lr=0.1, smoothness=1.0, rho=1.0).step({"w": torch.zeros(1)}, {"w": torch.ones(1)})


def test_adaptive_sgd_needs_constants_or_an_estimator():
    with pytest.raises(ValueError, match="smoothness and rho"):
        AdaptiveSGD(c=0.1, inner_lr=0.1, smoothness=1.0)


def test_secants_are_exact_on_a_known_function():
    theta = {"x": torch.tensor([[1.0, 0.0]], dtype=torch.float64)}
    previous = {"x": torch.tensor([[0.5, 0.0]], dtype=torch.float64)}
    result = secants(Cubic(), theta, previous, None)
    assert result.smoothness.item() == pytest.approx(abs((1.0 + 0.5) / 2 + 1))
    assert result.rho.item() == pytest.approx(1.0)


def test_secants_reject_a_zero_length_segment():
    theta = {"x": torch.ones(1, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match="distinct"):
        secants(Cubic(), theta, theta, None)


def test_online_lipschitz_probes_first_then_follows_the_path_as_a_running_maximum():
    draw, oracle = draw_cubic()
    params = {"x": torch.tensor([2.0, 0.0], dtype=torch.float64)}
    estimator = OnlineLipschitz(probe_radius=1e-3)
    optimizer = AdaptiveSGD(c=0.5, inner_lr=0.1, lipschitz=estimator)
    with pytest.raises(ValueError, match="needs an independent batch"):
        optimizer.constants()
    # First estimate: a probe 1e-3 back along the gradient (-4, 0) from (2, 0), i.e. to (2.001, 0).
    smoothness, rho = optimizer.constants(draw(params))
    assert smoothness == pytest.approx(3.0005) and rho == pytest.approx(1.0)
    history = []
    for _ in range(3):
        stats = optimizer.step(params, {"x": torch.tensor([-1.0, 0.0], dtype=torch.float64)},
                               StepInputs(independent=draw(params)))
        history.append(stats["smoothness"])
        assert stats["step_size"] == pytest.approx(0.5 / stats["lipschitz_estimate"])
    # x decreases, so the curvature falls and the running maximum keeps the first value.
    assert history == pytest.approx([3.0005] * 3)
    assert oracle.draws == 4


def test_online_lipschitz_starts_from_given_lower_bounds():
    draw, _ = draw_cubic()
    estimator = OnlineLipschitz(smoothness=100.0, rho=0.5)
    optimizer = AdaptiveSGD(c=0.5, inner_lr=0.1, lipschitz=estimator)
    params = {"x": torch.tensor([2.0, 0.0], dtype=torch.float64)}
    stats = optimizer.step(params, {"x": torch.zeros(2, dtype=torch.float64)}, StepInputs(independent=draw(params)))
    assert stats["smoothness"] == 100.0 and stats["rho"] == pytest.approx(1.0)
    restored = OnlineLipschitz()
    restored.load_state_dict(estimator.state_dict())
    assert (restored.smoothness, restored.rho) == (estimator.smoothness, estimator.rho)


def test_online_lipschitz_on_a_noisy_task_uses_common_data():
    """With common data the gradient noise cancels in the secant: the estimate is the exact one
    plus the noise Hessian's contribution, not the O(sigma / step) of independent batches."""
    g = torch.tensor([[1.0, -0.5, 0.8]], dtype=torch.float64)
    theta = {"x": torch.tensor([[0.6, 0.1, -0.3]], dtype=torch.float64)}
    previous = {"x": theta["x"] - 1e-3}
    noisy = secants(MatrixFactorisationOracle(g, sigma_g=10.0, sigma_h=0.0, seed=0), theta, previous,
                    MatrixFactorisationOracle(g, sigma_g=10.0, sigma_h=0.0, seed=0).sample(theta))
    exact = secants(MatrixFactorisationOracle(g), theta, previous, MatrixFactorisationOracle(g).sample(theta))
    torch.testing.assert_close(noisy.smoothness, exact.smoothness)


def test_adam_refuses_params_it_was_not_built_with():
    adam = Adam({"w": torch.zeros(2)}, lr=0.1)
    with pytest.raises(ValueError, match="same params"):
        adam.step({"w": torch.zeros(2)}, {"w": torch.ones(2)})


@pytest.mark.slow
def test_adaptive_sgd_with_online_constants_converges_on_the_factorisation_tasks():
    """Fallah, Mokhtari & Ozdaglar's step size with L and rho estimated online drives the exact MAML gradient down."""
    from metarl.estimators.meta_gradient import meta_gradient
    from metarl.estimators.synthetic import factorisation_objective

    tasks, d, alpha = 20, 5, 0.1
    g = 1.0 + 0.5 * torch.randn(tasks, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def exact_norm(x: torch.Tensor) -> float:
        x = x.clone().requires_grad_(True)
        stacked = x.expand(tasks, d)
        (grad,) = torch.autograd.grad(factorisation_objective(stacked, g).sum(), stacked, create_graph=True)
        (meta,) = torch.autograd.grad(factorisation_objective(stacked + alpha * grad, g).mean(), x)
        return float(meta.norm())

    def draw(params):
        return MatrixFactorisationOracle(g), {"x": params["x"].expand(tasks, d).clone()}

    params = {"x": torch.full((d,), 0.1, dtype=torch.float64)}
    optimizer = AdaptiveSGD(1 / 12, alpha, lipschitz=OnlineLipschitz())
    start, constants = exact_norm(params["x"]), []
    for _ in range(400):
        direction = meta_gradient("maml", MatrixFactorisationOracle(g), {"x": params["x"].expand(tasks, d).clone()},
                                  inner_lr=alpha)
        stats = optimizer.step(params, {"x": direction["x"].mean(0)}, StepInputs(independent=draw(params)))
        constants.append((stats["smoothness"], stats["rho"]))
    assert exact_norm(params["x"]) < start / 4
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(constants, constants[1:]))  # running maxima
    assert constants[-1][1] > constants[0][1]


def test_adaptive_sgd_skips_the_update_on_a_non_finite_independent_batch():
    class NaNOracle(Cubic):
        def objective(self, params, batch):
            return super().objective(params, batch) * float("nan")

    def draw(params):
        return NaNOracle(), {"x": params["x"].unsqueeze(0).clone()}

    params = {"x": torch.tensor([2.0, 0.0], dtype=torch.float64)}
    for lipschitz in (None, OnlineLipschitz()):
        optimizer = AdaptiveSGD(0.5, 0.1, smoothness=1.0, rho=1.0, lipschitz=lipschitz)
        stats = optimizer.step(params, {"x": torch.ones(2, dtype=torch.float64)}, StepInputs(independent=draw(params)))
        assert stats == {"step_size": 0.0, "skipped": True}
        assert torch.equal(params["x"], torch.tensor([2.0, 0.0], dtype=torch.float64))
