"""The data behind the GACD paper's analysis figures; acdistill.plots draws them, `acdistill figures` runs both.

- Inter-class correlation (paper Fig. 3-4): the C x C correlation matrix of a model's logits over a set of
  images, and |corr(teacher) - corr(student)| on natural and on adversarial inputs. A student that learned the
  teacher's class structure has a small difference.
- Feature geometry (paper Fig. 5): t-SNE of penultimate features of two classes plus adversarial examples of
  the second class pushed toward the first (the paper's birds, trucks and "adv trucks").
- Training curves: the per-epoch series dvclive wrote for each training stage.

Every function here runs the models it is given in eval mode and gives them back as it found them
(acdistill/untouched.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from acdistill.attacks import EVAL_ATTACKS, Budget
from acdistill.attacks.pgd import pgd
from acdistill.data import ImageSet, iterate, unit_images
from acdistill.errors import AcdistillError
from acdistill.untouched import leaves_model_untouched

PGD_STEP = 2 / 255
PGD_STEPS = 20


@leaves_model_untouched
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N, C] float logits of `model` in eval mode."""
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)])


def logit_correlation(logits: torch.Tensor) -> torch.Tensor:
    """[N, C] logits -> [C, C] Pearson correlation between the classes' logits over the N images."""
    if logits.ndim != 2 or len(logits) < 2:
        raise AcdistillError("logit correlation needs at least 2 images of [N, C] logits")
    return torch.corrcoef(logits.T.double())


@leaves_model_untouched
def adversarial_images(
    model: nn.Module, data: ImageSet, budget: Budget, *, batch_size: int, seed: int, device: torch.device | str
) -> torch.Tensor:
    """PGD-20 (the evaluation attack) examples against `model`, for every image in `data`."""
    torch.manual_seed(seed)
    run = EVAL_ATTACKS.get("pgd20").run
    return torch.cat([run(model, b.x, b.y, budget) for b in iterate(data, batch_size, device=device)])


def correlation_difference(teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[C, C] |corr(teacher logits) - corr(student logits)| on the same images."""
    return (logit_correlation(logits_of(teacher, images)) - logit_correlation(logits_of(student, images))).abs()


@dataclass
class FeatureCloud:
    """2-D t-SNE points with a group per point: 0 = natural class a, 1 = natural class b, 2 = class b attacked
    toward class a."""

    points: np.ndarray  # [N, 2]
    groups: np.ndarray  # [N]
    fooled: float  # percent of the attacked images the model assigns to class a


def two_class_subset(data: ImageSet, classes: tuple[int, int], per_class: int) -> tuple[ImageSet, ImageSet]:
    picked = []
    for c in classes:
        idx = (data.labels == c).nonzero().flatten()[:per_class]
        if len(idx) < 2:
            raise AcdistillError(f"t-SNE: the test subset has {len(idx)} images of class {c}; need at least 2")
        picked.append(data.select(idx))
    return picked[0], picked[1]


@leaves_model_untouched
def targeted_pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, budget: Budget) -> torch.Tensor:
    return pgd(
        lambda z: -F.cross_entropy(model(z), target, reduction="sum"),
        x,
        eps=budget.eps,
        step_size=PGD_STEP,
        steps=PGD_STEPS,
    )


@leaves_model_untouched
def feature_cloud(
    model: nn.Module,
    data: ImageSet,
    classes: tuple[int, int],
    *,
    per_class: int,
    budget: Budget,
    seed: int,
    device: torch.device | str,
    perplexity: float = 30.0,
) -> FeatureCloud:
    from sklearn.manifold import TSNE

    nat_a, nat_b = two_class_subset(data, classes, per_class)
    x_a, x_b = (unit_images(s.images.to(device)) for s in (nat_a, nat_b))
    torch.manual_seed(seed)
    adv_b = targeted_pgd(model, x_b, torch.full((len(x_b),), classes[0], device=device), budget)
    with torch.inference_mode():
        fooled = 100.0 * (model(adv_b).argmax(1) == classes[0]).float().mean().item()
        feats = torch.cat([model.features(x).float() for x in (x_a, x_b, adv_b)]).cpu().numpy()
    groups = np.repeat([0, 1, 2], [len(nat_a), len(nat_b), len(nat_b)])
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(feats) - 1) / 3), init="pca", random_state=seed)
    return FeatureCloud(tsne.fit_transform(feats), groups, round(fooled, 2))


def read_dvclive_series(live_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Every metric dvclive wrote under live_dir/plots/metrics, as name -> [(step, value)] ('loss/nce', ...)."""
    root = live_dir / "plots" / "metrics"
    series = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with tsv.open() as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if len(rows) > 1:
            name = str(tsv.relative_to(root).with_suffix(""))
            series[name] = [(float(r[0]), float(r[-1])) for r in rows[1:] if len(r) >= 2]
    return series
