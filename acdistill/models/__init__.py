"""Model zoo: every model normalises internally and exposes ``features`` / ``head``. Importing this package
registers every module's architectures (`register_model`, `register_family`); a new architecture is one new file."""

from acdistill.registry import import_modules

from .base import ImageClassifier, feature_dim
from .registry import (
    assemble,
    create_model,
    function_kwargs,
    list_families,
    list_models,
    register_family,
    register_model,
    varies_by,
)

import_modules(__name__, __path__, skip={"base", "registry", "zoo"})

__all__ = [
    "ImageClassifier",
    "assemble",
    "create_model",
    "feature_dim",
    "function_kwargs",
    "list_families",
    "list_models",
    "register_family",
    "register_model",
    "varies_by",
]
