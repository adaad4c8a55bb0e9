"""Model zoo: every model normalises internally and exposes ``features`` / ``head``."""

# Imported only so that their architectures register themselves.
from . import deepmind, mobilenet_v2, resnet, resnet_cifar, small_cnn, wide_resnet  # noqa: E402,F401
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
