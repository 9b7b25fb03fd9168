import pytest
import torch

from metarl.outer import SGD, Adam, AdaptiveSGD


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


def test_adaptive_sgd_step_is_c_over_lipschitz_estimate():
    params = {"w": torch.zeros(1)}
    seen = []

    def gradient_norm(theta):
        seen.append(theta["w"].clone())
        return 2.0

    stats = AdaptiveSGD(c=1 / 12, smoothness=2.0, rho=5.0, inner_lr=0.1, gradient_norm=gradient_norm).step(
        params, {"w": torch.ones(1)})
    lipschitz = 4 * 2.0 + 2 * 5.0 * 0.1 * 2.0
    assert stats["lipschitz_estimate"] == pytest.approx(lipschitz)
    assert params["w"].item() == pytest.approx(1 / 12 / lipschitz)
    assert torch.equal(seen[0], torch.zeros(1))  # the norm is taken at theta, before the step


def test_adam_refuses_params_it_was_not_built_with():
    adam = Adam({"w": torch.zeros(2)}, lr=0.1)
    with pytest.raises(ValueError, match="same params"):
        adam.step({"w": torch.zeros(2)}, {"w": torch.ones(2)})
