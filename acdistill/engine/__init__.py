from acdistill.engine.device import resolve_device
from acdistill.engine.evaluate import evaluate
from acdistill.engine.trainer import Trainer

__all__ = ["Trainer", "evaluate", "resolve_device"]
