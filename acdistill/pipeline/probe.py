"""The transfer probe: a linear head trained on a model's frozen features for another dataset, then attacked with
the model (the GACD paper's transfer experiment): fitted and measured (`fit_probe`), then shown and written."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from acdistill import progress
from acdistill.attacks import Budget
from acdistill.budgets import eps_text
from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import Params
from acdistill.data import load_split
from acdistill.engine import evaluate
from acdistill.engine.probe import PROBE_NEEDS, linear_probe
from acdistill.errors import AcdistillError
from acdistill.io import claim_outputs, json_text, write_files
from acdistill.models import feature_dim
from acdistill.pipeline.common import (
    PROBE_HEAD_CHECKPOINT,
    STUDENT_CHECKPOINT,
    accuracy_metrics,
    check_json_out,
    details_path,
    device_of,
    echo,
    refuse_overwrite,
    writes,
)
from acdistill.pipeline.evaluation import results_table


@dataclass(frozen=True)
class Probed:
    """A fitted probe: the frozen model with its head (`engine.probe.linear_probe`), the features it reads, the
    training images' count and classes, the head's fitting time (s) and the attacks' results on the test images."""

    probed: torch.nn.Module
    feature_dim: int
    train_images: int
    num_classes: int
    fit_seconds: float
    results: dict[str, dict]


def fit_probe(params: Params, model: Path, data_dir: Path | None, device: str | torch.device | None) -> Probed:
    """Fit the head on the frozen features of the model at `model` for `probe.dataset`, then attack the model and
    the head together with `probe.attacks` (L-inf, `probe.eps`). The inputs are checked and the outputs claimed
    first; a model without penultimate features is an AcdistillError."""
    cfg = params.probe
    dev = device_of(params, device)
    backbone = load_model(model, dev)
    feature_dim(backbone, f"model {model}", PROBE_NEEDS)
    train = load_split(cfg.dataset, True, cfg.train_subset, cfg.root, data_dir)
    test = load_split(cfg.dataset, False, cfg.test_subset, cfg.root, data_dir)
    claim_outputs()
    start = time.perf_counter()
    probed = linear_probe(
        backbone,
        train,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=params.seed,
        device=dev,
    )
    fit_seconds = time.perf_counter() - start
    budget = Budget(cfg.eps)
    with progress.callback() as on_batch:
        results = evaluate(
            probed, test, cfg.attacks, budget=budget, batch_size=256, seed=params.seed, device=dev, progress=on_batch
        )
    return Probed(probed, backbone.feature_dim, len(train), train.num_classes, fit_seconds, results)


def write_probe(params: Params, model: Path, fitted: Probed, title: str, out: Path, head: Path) -> None:
    """Write `out` (each attack's accuracy and interval), its details and markdown table, and the head with its
    sidecar (format acdistill-probe-head-1: its backbone, dataset, shapes and sha256)."""
    cfg, results = params.probe, fitted.results
    weights = safetensors.torch.save(
        {k: v.detach().cpu().contiguous() for k, v in fitted.probed.head.state_dict().items()}
    )
    head_sidecar = json_text(
        {
            "format": "acdistill-probe-head-1",
            "backbone": str(model),
            "backbone_sha256": read_sidecar(model)["sha256"],
            "dataset": cfg.dataset,
            "feature_dim": fitted.feature_dim,
            "num_classes": fitted.num_classes,
            "sha256": hashlib.sha256(weights).hexdigest(),
        }
    )
    details = {
        "model": str(model),
        "dataset": cfg.dataset,
        "train_images": fitted.train_images,
        "head_fit_seconds": round(fitted.fit_seconds, 2),
        **results,
    }
    write_files(
        {
            out: json_text(accuracy_metrics(results)),
            details_path(out): json_text(details),
            out.with_suffix(".md"): f"# Linear probe\n\n{title}\n\n{results_table(results, 'github')}\n",
            head: weights,
            head.with_suffix(".json"): head_sidecar,
        }
    )
    echo(f"wrote {out}, {details_path(out)}, {out.with_suffix('.md')} and {head}")


@writes("out", "head")
def probe(
    params: Params,
    *,
    model: Path = STUDENT_CHECKPOINT,
    out: Path = Path("metrics/probe.json"),
    head: Path = PROBE_HEAD_CHECKPOINT,
    force: bool = False,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen features of the model at `model` for `probe.dataset`, then report
    its clean and PGD-7 accuracy, attacking the frozen model and the head together. Writes `out` (.json: each
    attack's accuracy and interval), beside it the details (<out>_details.json) and a markdown table, and the head
    (`head`, .safetensors + sidecar); returns the results."""
    model = Path(model)
    cfg = params.probe
    if head.suffix != ".safetensors":
        raise AcdistillError(f"--head {head}: the head is written as .safetensors")
    check_json_out(out)
    if out.resolve() in (head.resolve(), head.with_suffix(".json").resolve()):
        raise AcdistillError(f"--out {out} would overwrite the head or its sidecar")
    refuse_overwrite(force, out, head)
    fitted = fit_probe(params, model, data_dir, device)
    title = (
        f"{model} features -> linear head on {cfg.dataset} ({fitted.train_images} train images, "
        f"{fitted.feature_dim} features), L-inf eps {eps_text(cfg.eps)}"
    )
    echo(title)
    echo(results_table(fitted.results, "simple"))
    write_probe(params, model, fitted, title, out, head)
    return {"model": str(model), "dataset": cfg.dataset, "train_images": fitted.train_images, **fitted.results}
