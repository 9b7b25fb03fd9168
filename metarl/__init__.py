"""metarl: meta-reinforcement learning with MAML, FO-MAML and HF-MAML."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, loaded on first use (PEP 562): importing torch takes seconds, and the ``metarl``
# command should not pay for it before it knows what to do.
_EXPORTS = {
    "Config": "metarl.config", "load_config": "metarl.config",
    "EvaluationResult": "metarl.evaluation", "evaluate": "metarl.evaluation",
    "TaskOracle": "metarl.meta", "estimate_meta_gradient": "metarl.meta", "meta_gradient": "metarl.meta",
    "MetaTrainer": "metarl.trainer", "run_training": "metarl.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metarl' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
