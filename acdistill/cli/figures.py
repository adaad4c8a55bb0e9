"""acdistill figures: the GACD paper's analysis figures for a teacher and its students, plus training curves and
eps sweeps of the pipeline's runs, as PNG files (DVC lists them as plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import STAGE, TeacherOpt, load, shared_options, user_errors
from acdistill.pipeline import figures as run
from acdistill.pipeline.common import TEACHER_CHECKPOINT


@shared_options(last=STAGE)
def figures(
    teacher: TeacherOpt = TEACHER_CHECKPOINT,
    student: Annotated[
        list[Path] | None, typer.Option(help="student checkpoint (repeatable); default: models/student.safetensors")
    ] = None,
    live: Annotated[
        Path, typer.Option(help="dvclive directory: one sub-directory of curves per training stage")
    ] = Path("dvclive"),
    metrics_dir: Annotated[Path, typer.Option(help="where attack-eval wrote its *_sweep.json files")] = Path("metrics"),
    out_dir: Annotated[Path, typer.Option(help="directory for the PNG files and figures.json")] = Path("figures"),
    **shared: Any,
) -> None:
    """Draw the GACD paper's analysis figures, the training curves and the eps sweeps (params section `figures`).

    Logit-correlation differences to the teacher on natural and PGD-20 inputs (the paper's Fig. 3-4), a t-SNE of
    two classes and their attacked images (Fig. 5), every stage's training curves and every eps sweep."""
    params, stage = load(shared)
    run(
        params,
        teacher=teacher,
        students=student,
        live=live,
        metrics_dir=metrics_dir,
        out_dir=out_dir,
        **stage,
    )


def register(app: typer.Typer) -> None:
    app.command("figures")(user_errors(figures))
