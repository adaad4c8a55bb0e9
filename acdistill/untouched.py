"""The promise of every public function that takes a model (evaluation, the masking checks, the attacks, the
probe, the analysis figures): the caller's model comes back as it was found.

torchattacks makes the same promise for its attacks: they run the model in eval mode and restore its mode after.
Here the model also keeps its batch-norm running statistics (eval mode never updates them, so a forward pass made
on the way, such as a check of the output width, cannot move them either) and its parameters' `.grad` (an attack
that calls `backward`, as C&W L2 and AutoAttack's FAB do, would otherwise add into them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from torch import nn

F = TypeVar("F", bound=Callable)


@contextmanager
def untouched(*models: nn.Module) -> Iterator[None]:
    """Run `models` in eval mode with their parameters frozen, and give each one back as it was found.

    On exit every submodule gets back its own train/eval flag (a model may mix them, e.g. a network training with
    frozen batch norms) and every parameter its `requires_grad`, also when the body raises.
    """
    modes = [(m, m.training) for model in models for m in model.modules()]
    trainable = [p for model in models for p in model.parameters() if p.requires_grad]
    try:
        for model in models:
            model.eval()
        for p in trainable:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p in trainable:
            p.requires_grad_(True)


def leaves_model_untouched(fn: F) -> F:
    """`fn(model, ...)`, run inside `untouched(model)`."""

    @functools.wraps(fn)
    def run(model: nn.Module, *args, **kwargs):
        with untouched(model):
            return fn(model, *args, **kwargs)

    return run  # type: ignore[return-value]
