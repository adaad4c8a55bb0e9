"""Batches from an in-memory ImageSet, with the standard CIFAR augmentation applied to whole batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from acdistill.data.datasets import ImageSet, unit_images


@dataclass
class Batch:
    x: torch.Tensor  # float [B, 3, 32, 32] in [0, 1]
    y: torch.Tensor  # int64 [B]
    index: torch.Tensor  # int64 [B], position in the original dataset

    def __len__(self) -> int:
        return len(self.y)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting: `.to("cuda")` from pageable memory synchronizes the stream, so
    each batch's few index copies would leave the GPU idle until the CPU had queued the next step."""
    if device.type != "cuda" or t.device == device:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)  # the pinned block is not reused before the copy ends


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a random horizontal flip, each image independently.

    The draws come from `generator` on the CPU, wherever `x` lives: an epoch crops alike on every device."""
    b, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=generator), dev)
    dx = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=generator), dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # [B, 1, 1, W]
    batch_idx = torch.arange(b, device=dev)[:, None, None, None]
    chan_idx = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = padded[batch_idx, chan_idx, rows, cols]
    flip = to_device(torch.rand(b, generator=generator) < 0.5, dev)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def iterate(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Yield batches; with ``shuffle``/``augment`` the order and crops are a pure function of ``seed``, so an
    epoch can be replayed exactly on resume. Data already on `device` (see `ImageSet.to`) is cropped there."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = to_device(order[start : start + batch_size], data.images.device)
        x = data.images[idx]
        if augment:
            x = random_crop_flip(x, gen)
        yield Batch(
            unit_images(x.to(device, non_blocking=True)),
            data.labels[idx].to(device, non_blocking=True),
            data.indices[idx].to(device, non_blocking=True),
        )
