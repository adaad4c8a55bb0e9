"""acdistill figures: the GACD paper's analysis figures for a teacher and its students, plus training curves and
eps sweeps of the pipeline's runs, as PNG files (DVC lists them as plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.analysis import adversarial_images, correlation_difference, feature_cloud, read_dvclive_series
from acdistill.attacks import Budget
from acdistill.checkpoint import load_model
from acdistill.config import Params
from acdistill.data import DATASETS, ImageSet, load_split, unit_images
from acdistill.engine.evaluate import first_n
from acdistill.errors import AcdistillError
from acdistill.io import claim_outputs, write_json
from acdistill.models import feature_dim
from acdistill.pipeline.common import (
    PIPELINE_MODELS,
    STUDENT_CHECKPOINT,
    TEACHER_CHECKPOINT,
    check_trained_on,
    device_of,
    echo,
    writes,
)
from acdistill.plots import correlation_png, curves_png, eps_sweep_png, tsne_png


def figure_models(
    params: Params, teacher: Path, students: list[Path], data_dir: Path | None, device: torch.device
) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], ImageSet]:
    """The teacher, the students by label (`student_labels`) and the test images, checked before anything is
    written: each model trained on params' dataset (unless eval.cross_dataset) with penultimate features, and
    figures.tsne_classes among the dataset's classes (AcdistillError)."""
    for role, path in [("teacher", teacher), *(("student", s) for s in students)]:
        check_trained_on(path, params, role, params.eval.cross_dataset, "eval.cross_dataset")
    teacher_model = load_model(teacher, device)
    student_models = {label: load_model(s, device) for label, s in zip(student_labels(students), students)}
    for name, net in {"teacher": teacher_model, **student_models}.items():
        feature_dim(net, name, "the t-SNE figure plots its penultimate features")
    test = load_split(params.data.dataset, False, params.data.test_subset, params.data.root, data_dir)
    tsne_classes = params.figures.tsne_classes
    if max(tsne_classes) >= test.num_classes:
        raise AcdistillError(f"figures.tsne_classes {tsne_classes}: {test.name} has {test.num_classes} classes")
    return teacher_model, student_models, test


def correlation_figure(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    stem: str,
    data: ImageSet,
    x: torch.Tensor,
    budget: Budget,
    path: Path,
    *,
    names: list[str],
    batch_size: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Draw at `path` the student's logit-correlation differences to the teacher on `data` (`x`, its images in
    [0, 1] on `device`) and on PGD-20 images against the student; returns their means ({natural, adversarial})."""
    x_adv = adversarial_images(student, data, budget, batch_size=batch_size, seed=seed, device=device)
    diffs = {
        "natural": correlation_difference(teacher, student, x).numpy(),
        "adversarial": correlation_difference(teacher, student, x_adv).numpy(),
    }
    correlation_png(
        {"natural": diffs["natural"], f"PGD-20 against {stem}": diffs["adversarial"]},
        path,
        class_names=names,
        title=f"|corr(teacher logits) - corr({stem} logits)|, first {len(data)} test images",
    )
    return {k: round(float(m.mean()), 4) for k, m in diffs.items()}


@writes("out_dir")
def figures(
    params: Params,
    *,
    teacher: Path = TEACHER_CHECKPOINT,
    students: list[Path] | None = None,
    live: Path = Path("dvclive"),
    metrics_dir: Path = Path("metrics"),
    out_dir: Path = Path("figures"),
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Logit-correlation differences to the teacher on natural and PGD-20 inputs (the GACD paper's Fig. 3-4),
    t-SNE of two classes and attacked images (Fig. 5), training curves and eps sweeps (params section `figures`),
    as PNG files in `out_dir` with figures.json; returns figures.json's summary."""
    students = [Path(s) for s in students] if students else [STUDENT_CHECKPOINT]
    live, metrics_dir = Path(live), Path(metrics_dir)
    cfg = params.figures
    dev = device_of(params, device)
    teacher_model, student_models, test = figure_models(params, teacher, students, data_dir, dev)
    models = {"teacher": teacher_model, **student_models}
    names = DATASETS.get(test.name).names_of_classes()
    budget = params.eval.budget()
    common = dict(seed=params.seed, device=dev)
    data = first_n(test, cfg.n)
    claim_outputs()
    x = unit_images(data.images.to(dev))
    summary: dict = {"logit_corr_mean_abs_diff": {}, "tsne_fooled_percent": {}}
    written = []
    # one step per attacked model: PGD-20 images for the correlations, targeted PGD-20 for each t-SNE cloud
    with progress.task("figures", len(student_models) + len(models) + 1, "steps") as task:
        for stem, net in student_models.items():
            written.append(out_dir / f"logit_corr_{stem}.png")
            summary["logit_corr_mean_abs_diff"][stem] = correlation_figure(
                teacher_model, net, stem, data, x, budget, written[-1], names=names, batch_size=cfg.batch_size, **common
            )
            task.advance()
        a, b = cfg.tsne_classes
        clouds = {}
        for name, net in models.items():
            clouds[name] = feature_cloud(
                net, test, cfg.tsne_classes, per_class=cfg.tsne_per_class, budget=budget, **common
            )
            task.advance()
        summary["tsne_fooled_percent"] = {name: c.fooled for name, c in clouds.items()}
        written.append(out_dir / "tsne.png")
        tsne_png(
            clouds,
            written[-1],
            labels=(names[a], names[b], f"adv {names[b]} (toward {names[a]})"),
            title=f"t-SNE of penultimate features, {cfg.tsne_per_class} test images per class, targeted PGD-20",
        )
        written += pipeline_figures(live, metrics_dir, out_dir, params)
        task.advance()
    write_json(out_dir / "figures.json", summary)
    echo("wrote " + ", ".join(str(w) for w in written + [out_dir / "figures.json"]))

    return summary


def student_labels(paths: list[Path]) -> list[str]:
    """Each checkpoint's file name, or its directory's name where students share a file name (ablate's runs)."""
    for labels in ([p.stem for p in paths], [p.parent.name for p in paths]):
        if len(set(labels)) == len(labels):
            return labels
    raise AcdistillError(f"figures: two students have the same file and directory names: {', '.join(map(str, paths))}")


def pipeline_figures(live: Path, metrics_dir: Path, out_dir: Path, params: Params) -> list[Path]:
    """Training curves of every checkpoint dvclive logged (dvclive/<checkpoint name>/), and every eps sweep
    attack-eval wrote, when there are any."""
    written = []
    rank = {name: i for i, name in enumerate(PIPELINE_MODELS)}
    live_dirs = (
        sorted((d for d in live.iterdir() if d.is_dir()), key=lambda d: (rank.get(d.name, len(rank)), d.name))
        if live.is_dir()
        else []
    )
    stages = {d.name: s for d in live_dirs if (s := read_dvclive_series(d))}
    if stages:
        written.append(out_dir / "training_curves.png")
        curves_png(stages, written[-1])
    sweeps = (
        {
            p.stem.removeprefix("eval_").removesuffix("_sweep"): json.loads(p.read_text())
            for p in sorted(metrics_dir.glob("*_sweep.json"))
        }
        if metrics_dir.is_dir()
        else {}
    )
    if sweeps:
        written.append(out_dir / "eps_sweep.png")
        attack = params.eval.sweep.attack if params.eval.sweep else "the sweep attack"
        eps_sweep_png(sweeps, written[-1], title="robust accuracy against eps", attack=attack, norm=params.eval.norm)
    return written
