"""acdistill distill: train a student from the frozen teacher with a distillation method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import (
    TRAINING,
    EpochsOpt,
    TeacherOpt,
    choice,
    given,
    load,
    shared_options,
    user_errors,
)
from acdistill.methods import METHODS
from acdistill.models import list_models
from acdistill.pipeline import distill as run
from acdistill.pipeline.common import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT


@shared_options(first=("params_file",), last=TRAINING)
def distill(
    method: Annotated[
        str | None,
        choice("distillation method: ", METHODS.names, " (see `acdistill methods`)"),
    ] = None,
    student: Annotated[
        str | None,
        choice("student architecture: ", list_models),
    ] = None,
    epochs: EpochsOpt = None,
    teacher: TeacherOpt = TEACHER_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="student checkpoint to write")] = STUDENT_CHECKPOINT,
    **shared: Any,
) -> None:
    """Distill a student from the teacher (params section `distill`)."""
    params, stage = load(shared, given("distill", method=method, student=student, epochs=epochs))
    run(params, teacher=teacher, out=out, **stage)


def register(app: typer.Typer) -> None:
    app.command("distill")(user_errors(distill))
