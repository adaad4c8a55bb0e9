"""acdistill: adversarial robustness distillation, evaluated with standard attacks.

Public API: `load_model`, `save_model`, `evaluate`, `create_model`, `list_models`, `load_params`.
"""
from acdistill.checkpoint import load_model, save_model
from acdistill.config import load_params
from acdistill.engine.evaluate import evaluate
from acdistill.models import create_model, list_models

__all__ = ["create_model", "evaluate", "list_models", "load_model", "load_params", "save_model"]
__version__ = "0.1.0"
