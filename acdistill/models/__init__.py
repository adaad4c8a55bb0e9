"""Model zoo: every model normalises internally and exposes ``features`` / ``head``."""

from .base import DATASET_STATS, ImageClassifier, feature_dim
from .registry import create_model, list_models, register_model

# Imported only so that their architectures register themselves.
from . import mobilenet_v2, resnet, resnet_cifar, small_cnn, wide_resnet  # noqa: E402,F401

__all__ = ["DATASET_STATS", "ImageClassifier", "create_model", "feature_dim", "list_models", "register_model"]
