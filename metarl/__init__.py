"""metarl: meta-reinforcement learning with MAML, FO-MAML and HF-MAML."""

__version__ = "0.1.0"

from metarl.config import Config, load_config
from metarl.evaluation import EvaluationResult, evaluate
from metarl.meta import TaskOracle, estimate_meta_gradient, meta_gradient
from metarl.trainer import MetaTrainer, run_training

__all__ = [
    "Config", "EvaluationResult", "MetaTrainer", "TaskOracle", "estimate_meta_gradient", "evaluate",
    "load_config", "meta_gradient", "run_training",
]
