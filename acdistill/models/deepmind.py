"""The WideResNet and PreActResNet of DeepMind's adversarial-robustness releases (Gowal et al. 2020, "Uncovering the
limits of adversarial training"; Rebuffi et al. 2021, "Fixing data augmentation"), as in their PyTorch model zoo
(deepmind-research/adversarial_robustness/pytorch/model_zoo.py), which RobustBench and RSLAD copy.

They differ from the TRADES WideResNet and kuangliu's PreActResNet in ways that keep the weights' shapes:
- Swish (SiLU) activations in most releases (`activation="silu"`), ReLU in some;
- TensorFlow's "SAME" padding: a strided 3x3 conv pads (0, 1, 0, 1) instead of (1, 1, 1, 1);
- in the PreActResNet, a 3x3 projection shortcut that reads the raw, padded block input.
Loading such weights into the other architectures runs without an error and computes another function.

Module names follow the reference, so released state dicts map onto these models by a prefix alone.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_family, register_model, varies_by

Activation = Literal["silu", "relu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU}


def same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow's 'SAME' padding for a 3x3 kernel: symmetric at stride 1, bottom/right only at stride 2."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


def activation_of(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False) if in_planes != out_planes else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        # As in the reference: a projection shortcut sees the pre-activated input, an identity one the raw input.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv_0(same_pad(out, self.stride))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return out + shortcut


class BlockGroup(nn.Module):
    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *[
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act)
                for i in range(num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    def __init__(self, depth: int, width: int, activation: Activation) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        act = activation_of(activation)
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            *[BlockGroup(n, channels[i], channels[i + 1], 1 if i == 0 else 2, act) for i in range(3)]
        )
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.relu = act()
        self.pool = global_pool()
        self.out_features = channels[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.batchnorm(self.layer(self.init_conv(x)))))


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
            if stride != 1 or in_planes != out_planes
            else None
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = x if self.shortcut is None else self.shortcut(same_pad(x, self.stride))
        out = self.conv_2d_1(same_pad(out, self.stride))
        return self.conv_2d_2(self.relu_1(self.batchnorm_1(out))) + shortcut


class DMPreActResNet(nn.Module):
    BLOCKS: ClassVar[dict[int, tuple[int, ...]]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(self, depth: int, activation: Activation) -> None:
        super().__init__()
        if depth not in self.BLOCKS:
            raise ValueError(f"PreActResNet depth must be one of {sorted(self.BLOCKS)}, got {depth}")
        act = activation_of(activation)
        self.conv_2d = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        in_planes = 64
        for i, (planes, stride, n) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2), self.BLOCKS[depth])):
            blocks = [
                PreActBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1, act) for j in range(n)
            ]
            self.add_module(f"layer_{i}", nn.Sequential(*blocks))
            in_planes = planes
        self.batchnorm = nn.BatchNorm2d(512)
        self.relu = act()
        self.pool = global_pool()
        self.out_features = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_2d(x)
        for i in range(4):
            out = getattr(self, f"layer_{i}")(out)
        return self.pool(self.relu(self.batchnorm(out)))


@register_family("dm_wrn_<depth>_<width>")
@varies_by("activation")
def dm_wide_resnet(
    num_classes: int, depth: int, width: int, activation: Activation = "silu"
) -> tuple[nn.Module, nn.Linear]:
    body = DMWideResNet(depth, width, activation)
    return body, nn.Linear(body.out_features, num_classes)


@register_family("dm_preact_resnet<depth>")
@varies_by("activation")
def dm_preact_resnet(num_classes: int, depth: int, activation: Activation = "silu") -> tuple[nn.Module, nn.Linear]:
    body = DMPreActResNet(depth, activation)
    return body, nn.Linear(body.out_features, num_classes)


def _register(depth: int, width: int) -> None:
    @register_model(f"dm_wrn_{depth}_{width}")
    @varies_by("activation")
    def build(num_classes: int, activation: Activation = "silu") -> tuple[nn.Module, nn.Linear]:
        return dm_wide_resnet(num_classes, depth, width, activation)


for _depth, _width in [(28, 10), (70, 16)]:
    _register(_depth, _width)


@register_model("dm_preact_resnet18")
@varies_by("activation")
def dm_preact_resnet18(num_classes: int, activation: Activation = "silu") -> tuple[nn.Module, nn.Linear]:
    return dm_preact_resnet(num_classes, 18, activation)
