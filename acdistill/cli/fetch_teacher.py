"""acdistill fetch-teacher: a teacher from a RobustBench name, a released checkpoint file, a URL, or trained here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdistill.cli.common import (
    DataDirOpt,
    DeviceOpt,
    EpochsOpt,
    ForceOpt,
    FormatOpt,
    MetricsOpt,
    NormalizeOpt,
    ParamsOpt,
    ResumeOpt,
    SetOpt,
    load,
    parse_normalize,
    user_errors,
)
from acdistill.pipeline import fetch_teacher as fetch
from acdistill.pipeline.common import TEACHER_CHECKPOINT
from acdistill.teachers import TEACHER_SOURCES


def fetch_teacher(
    params_file: ParamsOpt = Path("params.yaml"),
    source: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(TEACHER_SOURCES.names())} (default: params teacher.source; docs/teachers.md)"),
    ] = None,
    path: Annotated[Path | None, typer.Option(help="local .safetensors or .pt (source file)")] = None,
    url: Annotated[str | None, typer.Option(help="download URL (source url, needs --sha256)")] = None,
    sha256: Annotated[str | None, typer.Option(help="expected sha256 of the download")] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="architecture to train, or of a bare state dict in acdistill's layout (see `acdistill models`)"
        ),
    ] = None,
    format: FormatOpt = None,
    normalize: NormalizeOpt = None,
    strict_accuracy: Annotated[
        bool, typer.Option("--strict-accuracy", help="fail when the clean accuracy is over 5 points below the source's")
    ] = False,
    epochs: EpochsOpt = None,
    out: Annotated[Path, typer.Option(help="teacher checkpoint to write")] = TEACHER_CHECKPOINT,
    metrics: MetricsOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Get the robust teacher: a RobustBench entry, a released checkpoint (file or url), or train one here."""
    params = load(
        params_file,
        set_,
        **{
            "teacher.source": ("--source", source),
            "teacher.path": ("--path", str(path) if path else None),
            "teacher.url": ("--url", url),
            "teacher.sha256": ("--sha256", sha256),
            "teacher.arch": ("--arch", arch),
            "teacher.format": ("--format", format),
            "teacher.normalize": ("--normalize", parse_normalize(normalize)),
            "teacher.strict_accuracy": ("--strict-accuracy", strict_accuracy or None),
            "teacher.train.epochs": ("--epochs", epochs),
        },
    )
    fetch(params, out=out, metrics=metrics, data_dir=data_dir, device=device, resume=resume, force=force, arch=arch)


def register(app: typer.Typer) -> None:
    app.command("fetch-teacher")(user_errors(fetch_teacher))
