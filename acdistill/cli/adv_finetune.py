"""acdistill adv-finetune: short PGD-AT of a distilled student (GACD's AFT stage)."""

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
    load,
    user_errors,
)
from acdistill.pipeline import finetune
from acdistill.pipeline.common import STUDENT_AFT_CHECKPOINT, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT


def adv_finetune(
    params_file: ParamsOpt = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="student checkpoint to fine-tune")] = STUDENT_CHECKPOINT,
    epochs: EpochsOpt = None,
    lr: Annotated[float | None, typer.Option(help="override aft.lr")] = None,
    teacher: Annotated[Path, typer.Option(help="teacher, for an aft.method that needs one")] = TEACHER_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = STUDENT_AFT_CHECKPOINT,
    metrics: MetricsOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Adversarially fine-tune a student (params section `aft`, PGD-AT with a small lr by default)."""
    params = load(params_file, set_, **{"aft.epochs": ("--epochs", epochs), "aft.lr": ("--lr", lr)})
    finetune(
        params,
        model=model,
        teacher=teacher,
        out=out,
        metrics=metrics,
        data_dir=data_dir,
        device=device,
        resume=resume,
        force=force,
    )


def register(app: typer.Typer) -> None:
    app.command("adv-finetune")(user_errors(adv_finetune))
