"""acdistill fetch-teacher: a teacher from a RobustBench name, a released checkpoint file, a URL, or trained here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import (
    TRAINING,
    EpochsOpt,
    FormatOpt,
    NormalizeOpt,
    choice,
    given,
    load,
    parse_normalize,
    shared_options,
    user_errors,
)
from acdistill.models import list_models
from acdistill.pipeline import fetch_teacher as fetch
from acdistill.pipeline.common import TEACHER_CHECKPOINT


@shared_options(first=("params_file",), last=TRAINING)
def fetch_teacher(
    source: Annotated[
        str | None,
        typer.Option(help="train, file, url, robustbench or a registered source (default: params teacher.source)"),
    ] = None,
    path: Annotated[Path | None, typer.Option(help="local .safetensors or .pt (source file)")] = None,
    url: Annotated[str | None, typer.Option(help="download URL (source url, needs --sha256)")] = None,
    sha256: Annotated[
        str | None,
        typer.Option(help="expected sha256 of the weights file (needed by --source url, checked for every source)"),
    ] = None,
    arch: Annotated[
        str | None,
        choice(
            "architecture to train, or of a bare state dict in acdistill's layout (released layouts name their own): ",
            list_models,
        ),
    ] = None,
    format: FormatOpt = None,
    normalize: NormalizeOpt = None,
    strict_accuracy: Annotated[
        bool, typer.Option("--strict-accuracy", help="fail when the clean accuracy is over 5 points below the source's")
    ] = False,
    epochs: EpochsOpt = None,
    out: Annotated[Path, typer.Option(help="teacher checkpoint to write")] = TEACHER_CHECKPOINT,
    **shared: Any,
) -> None:
    """Get the robust teacher: a RobustBench entry, a released checkpoint (file or url), or train one here."""
    options = given(
        "teacher",
        source=source,
        path=str(path) if path else None,
        url=url,
        sha256=sha256,
        arch=arch,
        format=format,
        normalize=parse_normalize(normalize),
        strict_accuracy=strict_accuracy or None,
    )
    params, stage = load(shared, options | {"teacher.train.epochs": ("--epochs", epochs)})
    fetch(params, out=out, **stage, arch=arch)


def register(app: typer.Typer) -> None:
    app.command("fetch-teacher")(user_errors(fetch_teacher))
