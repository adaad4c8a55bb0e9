"""acdistill: adversarial robustness distillation, evaluated with standard attacks.

Public API: the stages (`fetch_teacher`, `distill`, `finetune`, `evaluate_checkpoint`, `probe`, `ablate`, `figures`,
`report`, and `reproduce` of a paper's table) on params from `load_params`; checkpoints (`load_model`,
`save_model`); `evaluate` on a model in memory; the model registry (`create_model`, `list_models`).
"""

from acdistill._version import __version__
from acdistill.checkpoint import load_model, save_model
from acdistill.config import load_params
from acdistill.engine.evaluate import evaluate
from acdistill.models import create_model, list_models
from acdistill.pipeline import (
    ablate,
    distill,
    evaluate_checkpoint,
    fetch_teacher,
    figures,
    finetune,
    probe,
    report,
    reproduce,
)

__all__ = [
    "__version__",
    "ablate",
    "create_model",
    "distill",
    "evaluate",
    "evaluate_checkpoint",
    "fetch_teacher",
    "figures",
    "finetune",
    "list_models",
    "load_model",
    "load_params",
    "probe",
    "report",
    "reproduce",
    "save_model",
]
