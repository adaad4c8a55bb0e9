"""acdistill's stages as functions: each command of the CLI parses its options into params and calls one of these.

params = acdistill.load_params("params.yaml")
acdistill.fetch_teacher(params)
acdistill.distill(params)
acdistill.evaluate_checkpoint(params, model="models/student.safetensors")
"""

from acdistill.pipeline.ablate import ablate
from acdistill.pipeline.evaluation import evaluate_checkpoint
from acdistill.pipeline.figures import figures
from acdistill.pipeline.probe import probe
from acdistill.pipeline.report import report
from acdistill.pipeline.reproduce import reproduce
from acdistill.pipeline.training import distill, fetch_teacher, finetune

__all__ = [
    "ablate",
    "distill",
    "evaluate_checkpoint",
    "fetch_teacher",
    "figures",
    "finetune",
    "probe",
    "report",
    "reproduce",
]
