"""The training stages: get the teacher, distill a student from it, adversarially fine-tune the student.

Each writes a checkpoint (weights + sidecar) and a metrics JSON, resumes from its per-epoch state, and refuses to
overwrite a finished checkpoint unless `force`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import Params
from acdistill.data import DATASETS
from acdistill.errors import AcdistillError
from acdistill.formats import normalization_values
from acdistill.io import output_lock
from acdistill.methods import METHODS
from acdistill.models import create_model
from acdistill.pipeline.common import (
    STUDENT_AFT_CHECKPOINT,
    STUDENT_CHECKPOINT,
    TEACHER_CHECKPOINT,
    check_trained_on,
    device_of,
    echo,
    freeze,
    metrics_path,
    new_model,
    refuse_overwrite,
    teacher_sha256,
    train_and_save,
    write_stage_metrics,
    writes,
)
from acdistill.teachers import import_teacher, open_teacher


def teacher_methods() -> list[str]:
    """The methods that train without a teacher, so can train one: read from the registry when asked, so that a
    method registered after import is among them."""
    return [name for name in METHODS.names() if not METHODS.get(name).needs_teacher]


@writes("out", "metrics")
def fetch_teacher(
    params: Params,
    *,
    out: Path = TEACHER_CHECKPOINT,
    metrics: Path | None = None,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    force: bool = False,
    arch: str | None = None,
) -> dict[str, Any]:
    """The teacher of `params.teacher`: trained here (source train: a method that needs no teacher), or imported
    from a RobustBench name, a released checkpoint file or a URL (see acdistill.teachers and docs/teachers.md).
    arch: an architecture the caller names, which an imported file must hold. `metrics` defaults to
    metrics/<out's stem>.json. Returns the stage's summary."""
    torch.manual_seed(params.seed)  # the same initialization in every run
    t = params.teacher
    metrics = metrics_path(out, metrics)
    if arch is not None and t.source == "robustbench":
        raise AcdistillError("--arch does not apply to source robustbench: the entry names its architecture")
    # the input first: a missing or unreadable teacher is what the user must fix, whatever the outputs hold
    opened = open_teacher(t, params.data.dataset, arch) if t.source != "train" else None
    refuse_overwrite(force, out)
    dev = device_of(params, device)
    if t.source == "train":
        if t.train.method not in teacher_methods():
            raise AcdistillError(
                f"teacher.train.method '{t.train.method}' needs a teacher itself; use {', '.join(teacher_methods())}"
            )
        mean, std = normalization_values(t.normalization() or "dataset", params.data.dataset)
        model = create_model(
            arch or t.arch, num_classes=DATASETS.get(params.data.dataset).num_classes, mean=mean, std=std
        )
        return train_and_save(
            "teacher",
            t.train,
            params,
            student=model,
            teacher=None,
            data_dir=data_dir,
            device=dev,
            out=out,
            metrics=metrics,
            resume=resume,
            force=force,
            context={},
        )
    with output_lock(metrics), progress.callback() as on_batch:
        summary = import_teacher(params, *opened, out=out, data_dir=data_dir, device=dev, progress=on_batch)
        write_stage_metrics(metrics, summary)
    expected = summary["expected_clean_acc"]
    stated = f", {expected:.2f} % stated by its source" if expected is not None else ""
    echo(
        f"fetch-teacher: {summary['file']} ({summary['format']}, {summary['arch']}) -> {out}: clean accuracy "
        f"{summary['clean_acc']:.2f} % on the first {summary['clean_acc_n']} test images{stated}"
    )
    return summary


@writes("out", "metrics")
def distill(
    params: Params,
    *,
    teacher: Path = TEACHER_CHECKPOINT,
    out: Path = STUDENT_CHECKPOINT,
    metrics: Path | None = None,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    force: bool = False,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Train a fresh `distill.student` from the frozen teacher at `teacher` with `distill.method`. `metrics`
    defaults to metrics/<out's stem>.json; per-epoch state and curves go to models/state/<out's stem>.pt and
    dvclive/<out's stem>/, or to `run_dir` when given (ablate's runs). Returns the stage's summary (method,
    epochs, images, last monitored accuracies, minutes)."""
    torch.manual_seed(params.seed)  # the same initialization in every run
    metrics = metrics_path(out, metrics)
    cfg = params.distill
    dev = device_of(params, device)
    teacher_model, context = None, {}
    if METHODS.get(cfg.method).needs_teacher:
        context["teacher_sha256"] = teacher_sha256(teacher, params)
        teacher_model = freeze(load_model(teacher, dev))
    student_model = new_model(cfg.student, params, DATASETS.get(params.data.dataset).num_classes)
    return train_and_save(
        "distill",
        cfg,
        params,
        student=student_model,
        teacher=teacher_model,
        data_dir=data_dir,
        device=dev,
        out=out,
        metrics=metrics,
        resume=resume,
        force=force,
        context=context,
        run_dir=run_dir,
    )


@writes("out", "metrics")
def finetune(
    params: Params,
    *,
    model: Path = STUDENT_CHECKPOINT,
    teacher: Path = TEACHER_CHECKPOINT,
    out: Path = STUDENT_AFT_CHECKPOINT,
    metrics: Path | None = None,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    force: bool = False,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Adversarially fine-tune the student at `model` with the `aft` section (GACD's AFT: PGD-AT with a small lr);
    `teacher` only for an aft.method that needs one. Unless `aft.epochs` is set, the fine-tuning lasts a tenth of
    the student's distillation epochs (at least 1). `metrics` and `run_dir` as in `distill`."""
    torch.manual_seed(params.seed)  # the same attack noise in every run
    metrics = metrics_path(out, metrics)
    dev = device_of(params, device)
    check_trained_on(model, params, "student", params.teacher.cross_dataset, "teacher.cross_dataset")
    student = load_model(model, dev).train()
    sidecar = read_sidecar(model)
    info = sidecar.get("info", {})
    cfg = params.aft.for_student(info.get("epochs") if info.get("stage") == "distill" else None, str(model))
    context = {"student_sha256": sidecar["sha256"]}
    teacher_model = None
    if METHODS.get(cfg.method).needs_teacher:
        context["teacher_sha256"] = teacher_sha256(teacher, params)
        teacher_model = freeze(load_model(teacher, dev))
    return train_and_save(
        "aft",
        cfg,
        params,
        student=student,
        teacher=teacher_model,
        data_dir=data_dir,
        device=dev,
        out=out,
        metrics=metrics,
        resume=resume,
        force=force,
        context=context,
        run_dir=run_dir,
    )
