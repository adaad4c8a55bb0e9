"""Linear probe (the GACD paper's transfer test): freeze a model's feature extractor, fit a linear classifier on a
target dataset, then attack the frozen extractor + head end to end.

The extractor runs in eval mode, so its batch-norm statistics cannot drift and its features are a fixed function
of the image: they are computed once and the head trains on the cached tensor. The caller's model comes back as it
was found (acdistill/untouched.py); the probed model holds a frozen copy of it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from acdistill import progress
from acdistill.data import ImageSet, iterate
from acdistill.models import feature_dim
from acdistill.untouched import leaves_model_untouched


class Probed(nn.Module):
    """features(x) of a frozen backbone followed by a linear head; what `evaluate` attacks. `linear_probe` builds
    it on a copy of the caller's backbone, so that switching the probed model's mode leaves the original alone."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features(x))


PROBE_NEEDS = "the probe needs a feature extractor (any model built by acdistill has one)"


@leaves_model_untouched
def extract_features(model: nn.Module, data: ImageSet, *, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """[N, D] float32 features of every image of `data`, on the CPU, from `model` in eval mode."""
    out = []
    with torch.inference_mode(), progress.task("probe: features", len(data)) as task:
        for batch in iterate(data, batch_size, device=device):
            out.append(model.features(batch.x).float().cpu())
            task.advance(len(batch))
    return torch.cat(out)


def fit_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> nn.Linear:
    """Softmax regression on fixed features: Adam with a cosine decay, mini-batches in a seeded order.

    It trains on standardized features (raw post-ReLU features differ in scale by orders of magnitude, which
    makes Adam crawl), then folds the standardization into the weights, so the head is one plain nn.Linear.
    """
    gen = torch.Generator().manual_seed(seed)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    head = nn.Linear(features.shape[1], num_classes, dtype=features.dtype)
    with torch.no_grad():  # a seeded init, so that a probe is reproducible whatever ran before it
        head.weight.normal_(0, 0.01, generator=gen)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    with progress.task("probe: linear head", epochs, "epochs") as task:
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(head(z[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            task.advance()
    with torch.no_grad():
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)
    return head.requires_grad_(False)


def linear_probe(
    backbone: nn.Module,
    train: ImageSet,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device | str,
) -> Probed:
    """Fit a head on `train` through the frozen `backbone`, and return a frozen copy of the backbone with the head.
    The backbone itself is not touched: weights, buffers, mode and requires_grad stay as they were."""
    feature_dim(backbone, "the model", PROBE_NEEDS)
    feats = extract_features(backbone, train, batch_size=batch_size, device=device)
    head = fit_linear_head(
        feats,
        train.labels,
        train.num_classes,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
    )
    return Probed(copy.deepcopy(backbone), head.to(device)).eval().requires_grad_(False)
