"""Batches from an in-memory ImageSet, with the standard CIFAR augmentation applied to whole batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from acdistill.data.datasets import ImageSet


@dataclass
class Batch:
    x: torch.Tensor  # float [B, 3, 32, 32] in [0, 1]
    y: torch.Tensor  # int64 [B]
    index: torch.Tensor  # int64 [B], position in the original dataset

    def __len__(self) -> int:
        return len(self.y)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a random horizontal flip, each image independently."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [B, 1, 1, W]
    batch_idx = torch.arange(b)[:, None, None, None]
    chan_idx = torch.arange(x.shape[1])[None, :, None, None]
    out = padded[batch_idx, chan_idx, rows, cols]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def iterate(data: ImageSet, batch_size: int, *, shuffle: bool = False, augment: bool = False,
            seed: int = 0, device: torch.device | str = "cpu", drop_last: bool = False) -> Iterator[Batch]:
    """Yield batches; with ``shuffle``/``augment`` the order and crops are a pure function of ``seed``, so an
    epoch can be replayed exactly on resume."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = data.images[idx]
        if augment:
            x = random_crop_flip(x, gen)
        yield Batch(x.to(device, non_blocking=True).float().div_(255),
                    data.labels[idx].to(device, non_blocking=True), data.indices[idx].to(device, non_blocking=True))
