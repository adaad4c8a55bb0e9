"""The training stages: get the teacher, distill a student from it, adversarially fine-tune the student.

Each writes a checkpoint (weights + sidecar) and a metrics JSON, resumes from its per-epoch state, and refuses to
overwrite a finished checkpoint unless `force`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.checkpoint import load_model, read_sidecar, save_model
from acdistill.config import Params
from acdistill.data import DATASETS, load_split
from acdistill.engine import evaluate
from acdistill.errors import AcdistillError, warn
from acdistill.io import output_lock
from acdistill.methods import METHODS
from acdistill.models import ImageClassifier
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
from acdistill.teachers import TEACHER_SOURCES

# The imported teacher's clean accuracy is measured on the first CHECK_IMAGES test images.
CHECK_IMAGES = 500
# Points of clean accuracy below the source's statement that mean a wrong setup rather than the check's sampling
# noise (500 images: a standard error of about 2 points) or RobustBench's full test set against its first images.
ACCURACY_GAP = 5.0
# Below this multiple of chance accuracy, a teacher whose source states no accuracy is named as suspicious.
CHANCE_FACTOR = 1.5


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
    """The teacher of `params.teacher`, from its registered source (`acdistill.teachers`, docs/teachers.md): trained
    here (source train, with a method that needs no teacher), or imported (a RobustBench name, a released checkpoint
    file, a URL), checked for clean accuracy and written with the source's record.
    arch: an architecture the caller names, which an imported file must hold. `metrics` defaults to
    metrics/<out's stem>.json. Returns the stage's summary."""
    torch.manual_seed(params.seed)  # the same initialization in every run
    t = params.teacher
    metrics = metrics_path(out, metrics)
    source = TEACHER_SOURCES.get(t.source)
    # the input first: a missing or unreadable teacher is what the user must fix, whatever the outputs hold
    model, record = source.open(t, params.data.dataset, arch)
    refuse_overwrite(force, out)
    dev = device_of(params, device)
    if source.trains:
        return train_and_save("teacher", t.train, params, model, None, {}, data_dir, dev, out, metrics, resume, force)
    with output_lock(metrics), progress.callback() as on_batch:
        summary = import_teacher(params, model, record, out=out, data_dir=data_dir, device=dev, progress=on_batch)
        write_stage_metrics(metrics, summary)
    expected = summary.get("expected_clean_acc")
    stated = f", {expected:.2f} % stated by its source" if expected is not None else ""
    where = f"{summary.get('file', t.source)} ({summary.get('format', t.source)}, {summary['arch']})"
    echo(
        f"fetch-teacher: {where} -> {out}: clean accuracy "
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
    teacher_model, context = frozen_teacher(cfg.method, teacher, params, dev)
    student = new_model(cfg.student, params, DATASETS.get(params.data.dataset).num_classes)
    return train_and_save(
        "distill", cfg, params, student, teacher_model, context, data_dir, dev, out, metrics, resume, force, run_dir
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
    teacher_model, context = frozen_teacher(cfg.method, teacher, params, dev)
    context = {"student_sha256": sidecar["sha256"], **context}
    return train_and_save(
        "aft", cfg, params, student, teacher_model, context, data_dir, dev, out, metrics, resume, force, run_dir
    )


def frozen_teacher(
    method: str, teacher: Path, params: Params, device: torch.device
) -> tuple[torch.nn.Module | None, dict[str, str]]:
    """The frozen teacher checkpoint at `teacher` on `device`, with its sha256 for the run's fingerprint, for a
    method that needs a teacher; (None, {}) for one that does not, which leaves the file unread."""
    if not METHODS.get(method).needs_teacher:
        return None, {}
    sha256 = teacher_sha256(teacher, params)
    return freeze(load_model(teacher, device)), {"teacher_sha256": sha256}


def import_teacher(
    params: Params,
    model: ImageClassifier,
    summary: dict[str, Any],
    *,
    out: Path,
    data_dir: Path | None,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The fetch-teacher stage for a source that does not train, once the source gave the teacher and its record:
    check its clean accuracy on the first CHECK_IMAGES test images, then write `out` (+ sidecar, which records the
    returned summary). A gap of more than ACCURACY_GAP points below the source's stated accuracy is a warning, or an
    error (nothing written) with `teacher.strict_accuracy`. progress: as in `evaluate`."""
    t, d = params.teacher, params.data
    summary = dict(summary)
    check = load_split(d.dataset, False, d.test_subset, d.root, data_dir).take(CHECK_IMAGES)
    model.to(device)
    acc = evaluate(model, check, ["natural"], device=device, progress=progress)["natural"]["accuracy"]
    summary.update(arch=model.arch, clean_acc=acc, clean_acc_n=len(check))
    expected = summary.get("expected_clean_acc")
    chance = 100 / DATASETS.get(d.dataset).num_classes
    if expected is None and acc < CHANCE_FACTOR * chance:
        warn(
            f"the teacher's clean accuracy, {acc:.2f} % on the first {len(check)} test images, is near chance "
            f"({chance:.0f} %) on {d.dataset}: a wrong dataset, format or normalization is the usual cause (give "
            "teacher.expected_clean_acc to have it checked)"
        )
    if expected is not None and acc < expected - ACCURACY_GAP:
        message = (
            f"the teacher's clean accuracy, {acc:.2f} % on the first {len(check)} test images, is "
            f"{expected - acc:.1f} points below the {expected:.2f} % its source states: a wrong format, "
            "normalization or dataset is the usual cause"
        )
        if t.strict_accuracy:
            raise AcdistillError(message + " (teacher.strict_accuracy)")
        warn(f"{message}; --strict-accuracy makes this an error")
    save_model(model.cpu(), out, dataset=d.dataset, info=summary)
    return summary
