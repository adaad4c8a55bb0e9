"""acdistill ablate: distill and evaluate one student per point of a parameter grid (or a list of points), then
tabulate them (see acdistill.pipeline.ablate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import STAGE, given, load, shared_options, user_errors
from acdistill.config import parse_override
from acdistill.errors import AcdistillError
from acdistill.pipeline import ablate as run
from acdistill.pipeline.common import TEACHER_CHECKPOINT


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """'distill.gacd.k=16,256' -> ('distill.gacd.k', [16, 256]); each value is read as YAML, like -S values."""
    key, _ = parse_override(text)  # checks the KEY=... form
    values = [parse_override(f"{key}={item.strip()}")[1] for item in text.partition("=")[2].split(",")]
    if not values or any(v is None for v in values):
        raise AcdistillError(f"--grid {text}: give KEY=V1,V2,... with no empty value")
    return key, values


@shared_options(last=STAGE)
def ablate(
    grid: Annotated[
        list[str] | None,
        typer.Option(help="KEY=V1,V2,... (repeatable); replaces ablate.grid, e.g. --grid distill.gacd.k=16,256,4096"),
    ] = None,
    sort_by: Annotated[
        str | None,
        typer.Option(
            help="sort the table by this column, descending (an attack name or train_minutes); default: grid order"
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help=(
                "S1,S2,... (two or more): run every point at each seed and tabulate each accuracy's mean with its "
                "95 % interval; replaces ablate.seeds"
            )
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(help="NAME1,NAME2,...: run only these explicit points of the params; replaces ablate.only"),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="points at once, each in its own process with its own GPU or a share of the CPU cores (replaces "
            "ablate.jobs; ablate.cluster: slurm sends them to Slurm)"
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="refuse a grid or points key the point's run does not read (e.g. distill.gacd.* for rslad) instead "
            "of warning; sets ablate.strict",
        ),
    ] = False,
    teacher: Annotated[Path, typer.Option(help="teacher checkpoint every point distills from")] = TEACHER_CHECKPOINT,
    runs: Annotated[Path, typer.Option(help="directory holding one sub-directory per point")] = Path("ablate"),
    out: Annotated[Path, typer.Option(help="collected JSON; the markdown table goes beside it (.md)")] = Path(
        "metrics/ablate.json"
    ),
    **shared: Any,
) -> None:
    """Distill and evaluate a student per point of a grid or list of points (params section `ablate`).

    A point's params are the params file, then -S overrides, then ablate.fixed, then the point's values. With
    ablate.search, each point's setting is first chosen on held-out training images. With --seeds, every point runs
    once per seed. Finished runs are reused, not rerun; accuracies come with their 95 % intervals."""
    options = given(
        "ablate",
        grid=dict(parse_grid_option(g) for g in grid) if grid else None,
        sort_by=sort_by,
        jobs=jobs,
        seeds=parse_override(f"ablate.seeds=[{seeds}]")[1] if seeds is not None else None,
        only=[name.strip() for name in only.split(",")] if only is not None else None,
        strict=strict or None,
    )
    params, stage = load(shared, options)
    run(params, teacher=teacher, runs=runs, out=out, **stage)


def register(app: typer.Typer) -> None:
    app.command("ablate")(user_errors(ablate))
