"""A ~24k-parameter CNN (~3 M multiply-adds per 32x32 image): trains in seconds on CPU, for tests and MNIST."""

from __future__ import annotations

from torch import nn

from .base import global_pool
from .registry import register_model


def _conv_bn_relu(in_planes: int, planes: int) -> list[nn.Module]:
    return [nn.Conv2d(in_planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU()]


@register_model("small_cnn")
def small_cnn(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    body = nn.Sequential(
        *_conv_bn_relu(3, 16),
        nn.MaxPool2d(2),
        *_conv_bn_relu(16, 32),
        nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64),
        global_pool(),
    )
    return body, nn.Linear(64, num_classes)
