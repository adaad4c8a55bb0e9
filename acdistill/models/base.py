"""Shared model wrapper: every architecture is normalisation -> body -> linear head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from acdistill.errors import AcdistillError

IN_CHANNELS = 3


def channel_values(values: float | Sequence[float], name: str) -> list[float]:
    """Return `values` as a plain list of IN_CHANNELS floats (a scalar applies to all)."""
    if isinstance(values, (int, float)):
        values = [values]
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * IN_CHANNELS
    if len(values) != IN_CHANNELS:
        raise ValueError(f"{name} needs 1 or {IN_CHANNELS} values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite numbers, got {values}")
    return values


def global_pool() -> nn.Sequential:
    # Adaptive pooling instead of the references' fixed avg_pool2d(4 or 8): identical
    # on 32x32 inputs, and other input sizes still give [B, D] features.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Normalize(nn.Module):
    """Per-channel standardisation, so attacks and epsilons work in [0, 1] pixel space."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        mean, std = channel_values(mean, "mean"), channel_values(std, "std")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        # Buffers so they follow .to(device) and are saved with the weights.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def feature_dim(model: nn.Module, who: str, need: str) -> int:
    """The width of `model.features(x)`. A model without features()/feature_dim (a third-party module) is a user
    error that says who has none and what needs it."""
    dim = getattr(model, "feature_dim", None)
    if not callable(getattr(model, "features", None)) or not isinstance(dim, int):
        raise AcdistillError(f"{who} has no features()/feature_dim: {need}")
    return dim


class ImageClassifier(nn.Module):
    """Classifier taking [0, 1] images; exposes pooled penultimate features for distillation."""

    def __init__(
        self,
        body: nn.Module,
        linear: nn.Linear,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        arch: str = "",
        arch_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.linear = linear
        self.feature_dim: int = linear.in_features
        self.arch = arch
        self.arch_kwargs: dict = dict(arch_kwargs or {})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def load_weights(self, state: dict[str, torch.Tensor], source: object) -> None:
        """Strict load of `state` (this model's key names) with a one-line AcdistillError naming `source` on a
        mismatch. `normalize.*` buffers absent from `state` keep this model's values: the caller has already put the
        right normalization there."""
        own = self.state_dict()
        state = {**{k: v for k, v in own.items() if k.startswith("normalize.")}, **state}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            parts = []
            if wrong:
                k = wrong[0]
                parts.append(
                    f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model "
                    f"{tuple(own[k].shape)})"
                )
            if missing:
                parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
            raise AcdistillError(f"{source}: weights do not fit arch '{self.arch}': {'; '.join(parts)}")
        self.load_state_dict(state)

    def normalization(self) -> tuple[list[float], list[float]]:
        """The per-channel (mean, std) applied to the inputs, as the buffers hold them now: this model's
        `normalize`, or, when that is the identity, the body's own (RobustBench's networks normalize inside, in
        buffers named mu/sigma or mean/std)."""
        mean, std = self.normalize.mean.flatten().tolist(), self.normalize.std.flatten().tolist()
        if mean == [0.0] * len(mean) and std == [1.0] * len(std):
            own = dict(self.body.named_buffers(recurse=False))
            for mean_name, std_name in (("mu", "sigma"), ("mean", "std")):
                if mean_name in own and std_name in own:
                    return own[mean_name].flatten().tolist(), own[std_name].flatten().tolist()
        return mean, std

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, feature_dim={self.feature_dim}"
