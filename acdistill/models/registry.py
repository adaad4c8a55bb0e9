"""Name -> builder registry.

A builder has the signature ``builder(num_classes: int, **kwargs) -> (body, linear)``:
``body`` maps a normalised [B, 3, H, W] batch to pooled features [B, D] and ``linear``
is the nn.Linear(D, num_classes) head. Builders own their head so each family can keep
its reference initialisation.

Three kinds of names resolve to a builder:
- a registered name (``resnet18``);
- a member of a registered family, whose name carries integers (``wrn_<depth>_<width>``: ``wrn_22_4``);
- ``robustbench:<name>``, a RobustBench model-zoo entry built by robustbench's own code (see `zoo.py`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from torch import nn

from acdistill.data import DATASETS
from acdistill.errors import AcdistillError, unknown_name
from acdistill.registry import Registry

from .base import ImageClassifier, channel_values
from .zoo import PREFIX, zoo_builder

Builder = Callable[..., tuple[nn.Module, nn.Linear]]

MODELS: Registry[Builder] = Registry("model")
# pattern as users read it ("wrn_<depth>_<width>") -> (regex, builder taking the integers as keyword arguments)
FAMILIES: dict[str, tuple[re.Pattern, Builder]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    return MODELS.register(name)


def register_family(pattern: str) -> Callable[[Builder], Builder]:
    """Register a builder for every name that fits `pattern`, e.g. "wrn_<depth>_<width>": each <field> matches an
    integer that the builder receives as the keyword argument of that name."""
    regex = re.compile(re.sub(r"<(\w+)>", r"(?P<\1>[0-9]+)", pattern))

    def add(builder: Builder) -> Builder:
        if pattern in FAMILIES:
            raise RuntimeError(f"model family '{pattern}' registered twice")
        FAMILIES[pattern] = (regex, builder)
        return builder

    return add


def varies_by(*kwargs: str) -> Callable[[Builder], Builder]:
    """Mark a builder whose keyword arguments `kwargs` change the function the model computes but none of its
    weights' names or shapes: weights alone cannot tell them, so only a sidecar (which records them) or a released
    format (which fixes them) can."""

    def mark(builder: Builder) -> Builder:
        builder.function_kwargs = kwargs
        return builder

    return mark


def function_kwargs(name: str) -> tuple[str, ...]:
    """The keyword arguments of `name`'s builder that its weights do not record (see `varies_by`)."""
    builder = resolve(name)
    return getattr(getattr(builder, "func", builder), "function_kwargs", ())


def list_models() -> list[str]:
    """The registered names (members of families such as ``wrn_<depth>_<width>`` only where registered by name)."""
    return MODELS.names()


def list_families() -> list[str]:
    return sorted(FAMILIES)


def resolve(name: str) -> Builder:
    """The builder behind `name`; an unknown name is an AcdistillError listing every choice."""
    if name in MODELS:
        return MODELS.get(name)
    if name.startswith(PREFIX):
        return functools.partial(zoo_builder, name.removeprefix(PREFIX))
    for regex, builder in FAMILIES.values():
        match = regex.fullmatch(name)
        if match:
            return functools.partial(builder, **{k: int(v) for k, v in match.groupdict().items()})
    choices = [*list_models(), *list_families(), f"{PREFIX}<name>"]
    raise AcdistillError(unknown_name("model", name, choices))


def create_model(
    name: str,
    num_classes: int = 10,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **kwargs,
) -> ImageClassifier:
    """Build a model. Extra kwargs go to the builder and must be JSON-serialisable,
    since they are recorded in ``model.arch_kwargs`` for rebuilding from a checkpoint.

    mean / std: the input normalisation inside the model; None is CIFAR-10's for our own architectures, and the
    identity for ``robustbench:`` models, which normalise inside robustbench's own code."""
    body, linear = resolve(name)(num_classes, **kwargs)
    return assemble(name, body, linear, mean=mean, std=std, **kwargs)


def assemble(
    name: str,
    body: nn.Module,
    linear: nn.Linear,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **kwargs,
) -> ImageClassifier:
    """The ImageClassifier of a built (body, linear) pair, recording how `create_model` rebuilds it."""
    if name.startswith(PREFIX):
        if (mean, std) not in ((None, None), ([0.0] * 3, [1.0] * 3)):
            raise AcdistillError(f"{name} normalizes its inputs inside robustbench's code; do not set mean/std")
        mean, std = 0.0, 1.0
    cifar10 = DATASETS.get("cifar10")  # the default, as the references' models are CIFAR-10 models
    mean = channel_values(cifar10.mean if mean is None else mean, "mean")
    std = channel_values(cifar10.std if std is None else std, "std")
    arch_kwargs = {"num_classes": linear.out_features, "mean": mean, "std": std, **kwargs}
    return ImageClassifier(body, linear, mean, std, arch=name, arch_kwargs=arch_kwargs)
