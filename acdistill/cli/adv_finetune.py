"""acdistill adv-finetune: short PGD-AT of a distilled student (GACD's AFT stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import TRAINING, EpochsOpt, given, load, shared_options, user_errors
from acdistill.pipeline import finetune
from acdistill.pipeline.common import STUDENT_AFT_CHECKPOINT, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT


@shared_options(first=("params_file",), last=TRAINING)
def adv_finetune(
    model: Annotated[Path, typer.Option(help="student checkpoint to fine-tune")] = STUDENT_CHECKPOINT,
    epochs: EpochsOpt = None,
    lr: Annotated[float | None, typer.Option(help="override aft.lr")] = None,
    teacher: Annotated[Path, typer.Option(help="teacher, for an aft.method that needs one")] = TEACHER_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = STUDENT_AFT_CHECKPOINT,
    **shared: Any,
) -> None:
    """Adversarially fine-tune a student (params section `aft`, PGD-AT with a small lr by default)."""
    params, stage = load(shared, given("aft", epochs=epochs, lr=lr))
    finetune(params, model=model, teacher=teacher, out=out, **stage)


def register(app: typer.Typer) -> None:
    app.command("adv-finetune")(user_errors(adv_finetune))
