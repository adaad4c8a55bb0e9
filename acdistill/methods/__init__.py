"""Training methods, one module each; importing this package registers every module's method."""

from acdistill.methods.base import METHODS, Method, MethodParams, TrainAttack, register_method
from acdistill.registry import import_modules

import_modules(__name__, __path__, skip={"base"})

__all__ = ["METHODS", "Method", "MethodParams", "TrainAttack", "register_method"]
