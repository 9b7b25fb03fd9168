"""metarl: meta-reinforcement learning with MAML, FO-MAML and HF-MAML."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, loaded on first use (PEP 562): importing torch takes seconds, and the ``metarl``
# command should not pay for it before it knows what to do.
_MODULES = {
    "metarl.estimators.meta_gradient": ("TaskOracle", "MetaGradient", "meta_gradient", "estimate_meta_gradient",
                                        "adapt"),
    "metarl.rl.oracles": ("PolicyGradientOracle",),
    "metarl.rl.policies": ("GaussianMLPPolicy", "CategoricalMLPPolicy"),
    "metarl.experiment.config": ("Config", "load_config"),
    "metarl.experiment.trainer": ("MetaTrainer", "run_training"),
    "metarl.experiment.evaluation": ("EvaluationResult", "evaluate"),
    "metarl.experiment.run_dir": ("load_params", "save_params"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metarl' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
