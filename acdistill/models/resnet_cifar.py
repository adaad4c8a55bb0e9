"""CIFAR ResNets of He et al. 2016 (sec. 4.2), following akamaster/pytorch_resnet_cifar10."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_model


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
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_planes == planes:
            pass
        elif shortcut == "A":
            self.shortcut = PadShortcut(stride, planes - in_planes)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, shortcut: str = "A") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            for s in [stride] + [1] * (n - 1):
                layers.append(BasicBlock(in_planes, planes, s, shortcut))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = global_pool()
        self.out_features = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.pool(self.layers(out))


def _kaiming_init(module: nn.Module) -> None:
    # The reference re-initialises convs and the classifier with kaiming_normal_ (fan_in).
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


def cifar_resnet(num_classes: int, depth: int, shortcut: str = "A") -> tuple[nn.Module, nn.Linear]:
    """``shortcut="A"`` (default) is the paper's CIFAR setting: ResNet-20 has 269,722
    parameters with 10 classes. ``"B"`` uses 1x1 conv + BN projections, the variant
    behind the often-quoted 272,474 (e.g. osmr/imgclsmob)."""
    body = CifarResNet(depth, shortcut)
    linear = nn.Linear(body.out_features, num_classes)
    body.apply(_kaiming_init)
    linear.apply(_kaiming_init)
    return body, linear


def _register(depth: int) -> None:
    @register_model(f"resnet{depth}")
    def build(num_classes: int, shortcut: str = "A") -> tuple[nn.Module, nn.Linear]:
        return cifar_resnet(num_classes, depth, shortcut)


for _depth in (20, 32, 56):
    _register(_depth)
