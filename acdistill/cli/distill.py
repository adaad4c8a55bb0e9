"""acdistill distill: train a student from the frozen teacher with a distillation method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdistill.cli.common import (
    DataDirOpt,
    DeviceOpt,
    EpochsOpt,
    ForceOpt,
    MetricsOpt,
    ParamsOpt,
    ResumeOpt,
    SetOpt,
    completion,
    load,
    user_errors,
)
from acdistill.methods import METHODS
from acdistill.models import list_models
from acdistill.pipeline import distill as run
from acdistill.pipeline.common import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT


def distill(
    params_file: ParamsOpt = Path("params.yaml"),
    method: Annotated[
        str | None,
        typer.Option(
            help=f"distillation method: {', '.join(METHODS.names())} (see `acdistill methods`)",
            autocompletion=completion(METHODS.names),
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(help=f"student architecture: {', '.join(list_models())}", autocompletion=completion(list_models)),
    ] = None,
    epochs: EpochsOpt = None,
    teacher: Annotated[Path, typer.Option(help="teacher checkpoint")] = TEACHER_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="student checkpoint to write")] = STUDENT_CHECKPOINT,
    metrics: MetricsOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Distill a student from the teacher (params section `distill`)."""
    params = load(
        params_file,
        set_,
        **{
            "distill.method": ("--method", method),
            "distill.student": ("--student", student),
            "distill.epochs": ("--epochs", epochs),
        },
    )
    run(params, teacher=teacher, out=out, metrics=metrics, data_dir=data_dir, device=device, resume=resume, force=force)


def register(app: typer.Typer) -> None:
    app.command("distill")(user_errors(distill))
