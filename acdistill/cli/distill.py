"""acdistill distill: train a student from the frozen teacher with a distillation method."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from acdistill.checkpoint import load_model, read_sidecar
from acdistill.cli.common import (DataDirOpt, DeviceOpt, EpochsOpt, ForceOpt, ParamsOpt, ResumeOpt, SetOpt,
                                  check_classes, completion, device_of, freeze, load, new_model, train_and_save,
                                  user_errors, writes)
from acdistill.config import Params
from acdistill.data import DATASETS
from acdistill.methods import METHODS
from acdistill.models import list_models


def distill(
    params_file: ParamsOpt = Path("params.yaml"),
    method: Annotated[Optional[str], typer.Option(
        help=f"distillation method: {', '.join(METHODS.names())} (see `acdistill methods`)",
        autocompletion=completion(METHODS.names))] = None,
    student: Annotated[Optional[str], typer.Option(
        help=f"student architecture: {', '.join(list_models())}", autocompletion=completion(list_models))] = None,
    epochs: EpochsOpt = None,
    teacher: Annotated[Path, typer.Option(help="teacher checkpoint")] = Path("models/teacher.safetensors"),
    out: Annotated[Path, typer.Option(help="student checkpoint to write")] = Path("models/student.safetensors"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/distill.json"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Distill a student from the teacher (params section `distill`)."""
    params = load(params_file, set_, **{"distill.method": method, "distill.student": student,
                                        "distill.epochs": epochs})
    run_distill(params, teacher=teacher, out=out, metrics=metrics, data_dir=data_dir, device=device_of(params, device),
                resume=resume, force=force)


def run_distill(params: Params, *, teacher: Path, out: Path, metrics: Path, data_dir: Path | None,
                device: torch.device, resume: bool, force: bool, run_dir: Path | None = None) -> dict[str, Any]:
    """Train a fresh `distill.student` from the frozen teacher; `run_dir` as in `train_and_save`."""
    cfg = params.distill
    teacher_model, context = None, {}
    if METHODS.get(cfg.method).needs_teacher:
        teacher_model = freeze(load_model(teacher, device))
        context["teacher_sha256"] = read_sidecar(teacher)["sha256"]
        check_classes(teacher_model, params.data.dataset, f"teacher {teacher}")
    student_model = new_model(cfg.student, params, DATASETS.get(params.data.dataset).num_classes)
    return train_and_save("distill", cfg, params, student=student_model, teacher=teacher_model, data_dir=data_dir,
                          device=device, out=out, metrics=metrics, resume=resume, force=force, context=context,
                          run_dir=run_dir)

def register(app: typer.Typer) -> None:
    app.command("distill")(user_errors(writes("out", "metrics")(distill)))
