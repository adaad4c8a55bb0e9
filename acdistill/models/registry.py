"""Name -> builder registry.

A builder has the signature ``builder(num_classes: int, **kwargs) -> (body, linear)``:
``body`` maps a normalised [B, 3, H, W] batch to pooled features [B, D] and ``linear``
is the nn.Linear(D, num_classes) head. Builders own their head so each family can keep
its reference initialisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from acdistill.registry import Registry

from .base import DATASET_STATS, ImageClassifier, channel_values

Builder = Callable[..., tuple[nn.Module, nn.Linear]]

MODELS: Registry[Builder] = Registry("model")


def register_model(name: str) -> Callable[[Builder], Builder]:
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int = 10,
    mean: float | Sequence[float] = DATASET_STATS["cifar10"][0],
    std: float | Sequence[float] = DATASET_STATS["cifar10"][1],
    **kwargs,
) -> ImageClassifier:
    """Build a registered model. Extra kwargs go to the builder and must be JSON-serialisable,
    since they are recorded in ``model.arch_kwargs`` for rebuilding from a checkpoint."""
    builder = MODELS.get(name)
    mean, std = channel_values(mean, "mean"), channel_values(std, "std")
    body, linear = builder(num_classes, **kwargs)
    arch_kwargs = {"num_classes": num_classes, "mean": mean, "std": std, **kwargs}
    return ImageClassifier(body, linear, mean, std, arch=name, arch_kwargs=arch_kwargs)
