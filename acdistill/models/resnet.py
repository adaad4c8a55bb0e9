"""ResNet-18/34/50 and PreActResNet-18 for 32x32 inputs, following kuangliu/pytorch-cifar (3x3 stride-1 stem, no
max-pool), the layout that RSLAD, ARD, MadryLab's `robustness` and RobustBench's CIFAR ResNets share."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import global_pool
from .registry import register_model, varies_by


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)


def projection(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


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

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = (
                PadShortcut(stride, planes - in_planes) if shortcut == "A" else projection(in_planes, planes, stride)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 block of ResNet-50, widening by 4, with the stride on the 3x3 conv (as kuangliu's)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


PreActShortcut = Literal["preact", "raw"]


class PreActBlock(nn.Module):
    """A projection shortcut reads the block's pre-activated input (kuangliu/pytorch-cifar) or its raw input
    (locuslab/fast_adversarial, RobustBench's PreActResNet). The two have the same weights and compute different
    functions; an identity shortcut always reads the raw input."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: PreActShortcut = "preact") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut_reads = shortcut
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut(out if self.shortcut_reads == "preact" else x)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: list[int],
        preact: bool = False,
        final_bn: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        # Pre-activation blocks normalise their own input, so that stem is a bare conv. kuangliu's PreActResNet has
        # no BN-ReLU before pooling; fast_adversarial's has one (`final_bn`).
        stem = [conv3x3(3, 64)] if preact else [conv3x3(3, 64), nn.BatchNorm2d(64), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        layers, in_planes = [], 64
        for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks):
            for s in [stride] + [1] * (n - 1):
                layers.append(block(in_planes, planes, s, **block_kwargs))
                in_planes = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes) if final_bn else None
        self.pool = global_pool()
        self.out_features = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        return self.pool(out)


def _head(body: ResNet, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return body, nn.Linear(body.out_features, num_classes)


@register_model("resnet18")
def resnet18(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return _head(ResNet(BasicBlock, [2, 2, 2, 2]), num_classes)


@register_model("resnet34")
def resnet34(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return _head(ResNet(BasicBlock, [3, 4, 6, 3]), num_classes)


@register_model("resnet50")
def resnet50(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    """The CIFAR ResNet-50 of MadryLab's `robustness` and RobustBench's Engstrom2019Robustness."""
    return _head(ResNet(Bottleneck, [3, 4, 6, 3]), num_classes)


@register_model("preact_resnet18")
@varies_by("shortcut")
def preact_resnet18(
    num_classes: int, shortcut: PreActShortcut = "preact", final_bn: bool = False
) -> tuple[nn.Module, nn.Linear]:
    """`shortcut="raw", final_bn=True` is locuslab/fast_adversarial's PreActResNet-18; the defaults are
    kuangliu's."""
    if shortcut not in ("preact", "raw"):
        raise ValueError(f"shortcut must be 'preact' or 'raw', got {shortcut!r}")
    return _head(ResNet(PreActBlock, [2, 2, 2, 2], preact=True, final_bn=final_bn, shortcut=shortcut), num_classes)
