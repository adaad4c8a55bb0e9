"""ResNet-18 and PreActResNet-18 for 32x32 inputs, following kuangliu/pytorch-cifar
(3x3 stride-1 stem, no max-pool)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_model


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample and zero-pad channels. Being parameter-free is what
    keeps ResNet-20 at the paper's 0.27M parameters."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (extra_channels // 2, extra_channels - extra_channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """A shape-changing shortcut is a 1x1 conv + BN projection ("B", ResNet-18) or the parameter-free
    option "A" of the CIFAR ResNets."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = (PadShortcut(stride, planes - in_planes) if shortcut == "A" else
                             nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection shortcut sees the pre-activated input, an identity one the raw input.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], num_blocks: list[int], preact: bool) -> None:
        super().__init__()
        # Pre-activation blocks normalise their own input, so that stem is a bare conv.
        # As in the reference, PreActResNet also has no final BN-ReLU before pooling.
        stem = [conv3x3(3, 64)] if preact else [conv3x3(3, 64), nn.BatchNorm2d(64), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        layers, in_planes = [], 64
        for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks):
            for s in [stride] + [1] * (n - 1):
                layers.append(block(in_planes, planes, s))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = global_pool()
        self.out_features = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x)))


def _build(num_classes: int, preact: bool) -> tuple[nn.Module, nn.Linear]:
    body = ResNet(PreActBlock if preact else BasicBlock, [2, 2, 2, 2], preact)
    return body, nn.Linear(body.out_features, num_classes)


@register_model("resnet18")
def resnet18(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return _build(num_classes, preact=False)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return _build(num_classes, preact=True)
