"""WideResNet as used by TRADES/RSLAD/ARD and RobustBench's `WideResNet` (xternalz/WideResNet-pytorch).

TRADES' copy also builds an unused ``sub_block1``; it is left out here. `acdistill.teachers` maps those
checkpoints (``block1.layer.0.*``, ``convShortcut``, ``fc``) onto this model's names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_family, register_model


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # As in the reference: a projection shortcut sees the pre-activated input.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        layers, in_planes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            for s in [stride] + [1] * (n - 1):
                layers.append(WideBasic(in_planes, planes * widen_factor, s, drop_rate))
                in_planes = planes * widen_factor
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = global_pool()
        self.out_features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        return self.pool(F.relu(self.bn(out)))


@register_family("wrn_<depth>_<widen_factor>")
def wide_resnet(num_classes: int, depth: int, widen_factor: int, drop_rate: float = 0.0) -> tuple[nn.Module, nn.Linear]:
    body = WideResNet(depth, widen_factor, drop_rate)
    linear = nn.Linear(body.out_features, num_classes)
    nn.init.zeros_(linear.bias)
    return body, linear


def _register(depth: int, widen_factor: int) -> None:
    @register_model(f"wrn_{depth}_{widen_factor}")
    def build(num_classes: int, drop_rate: float = 0.0) -> tuple[nn.Module, nn.Linear]:
        return wide_resnet(num_classes, depth, widen_factor, drop_rate)


for _depth, _widen in [(16, 2), (28, 10), (34, 2), (34, 10), (34, 20), (40, 2), (70, 16)]:
    _register(_depth, _widen)
