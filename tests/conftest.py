"""Test-wide settings."""

import pytest


@pytest.fixture(autouse=True)
def _wandb_disabled_unless_tested(monkeypatch, request):
    """Training runs in tests log nothing to W&B, except in the tests of the W&B integration."""
    if not request.module.__name__.endswith("test_tracking"):
        monkeypatch.setenv("WANDB_MODE", "disabled")
