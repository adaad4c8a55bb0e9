"""Training methods, one module each; importing this package registers every module's method."""

import importlib
import pkgutil

from acdistill.methods.base import METHODS, Method, MethodParams, TrainAttack, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "MethodParams", "TrainAttack", "register_method"]
