import pytest
import torch

from metarl.rl.returns import LinearFeatureBaseline, discount_weights, discounted_returns, gae


def test_discounted_returns_and_gae_lambda_one():
    torch.manual_seed(0)
    rewards = torch.randn(6, 2, 3, dtype=torch.float64)
    mask = torch.ones_like(rewards)
    mask[4:, 0, 1] = 0
    rewards = rewards * mask
    returns = discounted_returns(rewards, mask, 0.9)
    expected = sum(0.9**k * rewards[2 + k, 1, 2] for k in range(4))
    assert torch.isclose(returns[2, 1, 2], expected)
    assert returns[3, 0, 1] == rewards[3, 0, 1] and returns[4, 0, 1] == 0
    values = torch.randn_like(rewards) * mask
    torch.testing.assert_close(gae(rewards, values, mask, 0.9, 1.0), (returns - values) * mask)
    # lambda = 0: one-step TD errors.
    td = gae(rewards, values, mask, 0.9, 0.0)
    assert torch.isclose(td[1, 1, 1], rewards[1, 1, 1] + 0.9 * values[2, 1, 1] - values[1, 1, 1])


def test_linear_baseline_fits_linear_targets_per_task():
    torch.manual_seed(1)
    obs = torch.randn(10, 2, 4, 2, dtype=torch.float64)
    mask = torch.ones(10, 2, 4, dtype=torch.float64)
    features = LinearFeatureBaseline.features(obs, mask)
    weights = torch.randn(2, features.shape[-1], dtype=torch.float64)
    targets = torch.einsum("tbmf,bf->tbm", features, weights)
    fitted = LinearFeatureBaseline(reg_coeff=1e-12).fit_predict(obs, targets, mask)
    torch.testing.assert_close(fitted, targets, rtol=1e-5, atol=1e-6)


def test_linear_baseline_survives_rank_deficient_data():
    baseline = LinearFeatureBaseline()
    mask = torch.ones(5, 3, 2)
    cases = {
        "constant observations": torch.ones(5, 3, 2, 2),
        "zero observations": torch.zeros(5, 3, 2, 2),
        "duplicated coordinate": torch.randn(5, 3, 2, 1).expand(5, 3, 2, 2),
    }
    for name, obs in cases.items():
        values = baseline.fit_predict(obs, torch.randn(5, 3, 2), mask)
        assert torch.isfinite(values).all(), name
    one_step = baseline.fit_predict(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1), torch.ones(1, 1, 1))
    assert torch.isfinite(one_step).all()
    all_padding = baseline.fit_predict(torch.zeros(4, 2, 2, 2), torch.zeros(4, 2, 2), torch.zeros(4, 2, 2))
    assert (all_padding == 0).all()


def test_discount_weights_are_gamma_to_the_power_t_in_the_working_dtype():
    """Pinned bit for bit: the power is taken in the working dtype (results of DiCE runs depend on it)."""
    for dtype in (torch.float32, torch.float64):
        weights = discount_weights(200, 0.99, dtype)
        assert weights.dtype == dtype and torch.equal(weights, 0.99 ** torch.arange(200, dtype=dtype))
    assert discount_weights(3, 0.5, torch.float32, "cpu").tolist() == [1.0, 0.5, 0.25]


def test_linear_baseline_ridge_is_rllab_absolute_or_scaled_by_the_normal_matrix():
    """``absolute``: rllab's fit, ``(X^T X + c I) w = X^T y``; ``relative``: ``c`` times the mean
    diagonal of ``X^T X``. Both against the normal equations solved directly, per task."""
    torch.manual_seed(2)
    obs = 3 * torch.randn(20, 2, 5, 3, dtype=torch.float64)
    mask = torch.ones(20, 2, 5, dtype=torch.float64)
    targets = torch.randn(20, 2, 5, dtype=torch.float64)
    X = LinearFeatureBaseline.features(obs, mask).permute(1, 0, 2, 3).reshape(2, 100, -1)
    y = targets.permute(1, 0, 2).reshape(2, 100, 1)
    gram, eye = X.transpose(1, 2) @ X, torch.eye(X.shape[-1], dtype=torch.float64)
    coeff = 1e-2  # large enough for the two ridges to differ visibly
    for ridge, reg in [("absolute", coeff * eye),
                       ("relative", coeff * gram.diagonal(dim1=1, dim2=2).mean(1).view(2, 1, 1) * eye)]:
        expected = (X @ torch.linalg.solve(gram + reg, X.transpose(1, 2) @ y)).view(2, 20, 5).permute(1, 0, 2)
        fitted = LinearFeatureBaseline(reg_coeff=coeff, ridge=ridge).fit_predict(obs, targets, mask)
        torch.testing.assert_close(fitted, expected, rtol=1e-9, atol=1e-9)
    relative = LinearFeatureBaseline(reg_coeff=coeff).fit_predict(obs, targets, mask)
    assert not torch.allclose(relative,
                              LinearFeatureBaseline(reg_coeff=coeff, ridge="absolute").fit_predict(obs, targets, mask))
    with pytest.raises(ValueError, match="ridge 'l2' is unknown"):
        LinearFeatureBaseline(ridge="l2")
