"""CIFAR ResNets of He et al. 2016 (sec. 4.2), following akamaster/pytorch_resnet_cifar10."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_model
from .resnet import BasicBlock


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
