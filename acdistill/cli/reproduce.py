"""acdistill reproduce: run a paper table's presets and set the measured numbers beside the paper's (see
acdistill.pipeline.reproduce)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from tabulate import tabulate

from acdistill.cli.common import completion, shared_options, user_errors
from acdistill.config import parse_override
from acdistill.errors import AcdistillError
from acdistill.papers import table_ids
from acdistill.pipeline.reproduce import ROOT
from acdistill.pipeline.reproduce import dry_run as estimate_table
from acdistill.pipeline.reproduce import listing as list_tables
from acdistill.pipeline.reproduce import reproduce as run_table


def _tables_help() -> str:
    ids = table_ids()
    return f"the table or figure: {', '.join(ids)}" if ids else "the table or figure (none under configs/papers yet)"


def overrides_of(set_: list[str] | None, jobs: int | None) -> dict[str, Any]:
    overrides = dict(parse_override(text) for text in set_ or [])
    if jobs is not None:
        overrides["ablate.jobs"] = jobs
    return overrides


@shared_options(last=("data_dir", "device", "set_"))
def reproduce(
    table: Annotated[
        str | None, typer.Argument(help=_tables_help(), autocompletion=completion(table_ids), show_default=False)
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the tables: title, blocks, rows and cells")] = False,
    rows: Annotated[
        str | None,
        typer.Option(help="R1,R2,...: run only these rows (ablate.points names) of the table's blocks"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="list every row with its estimated GPU- and CPU-hours; run and write nothing"),
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="points at once, each in its own process (ablate.jobs; -S ablate.cluster=slurm and -S "
            "ablate.slurm.* send them to Slurm)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="directory of the teachers, the runs and the reports")] = ROOT,
    **shared: Any,
) -> None:
    """Run a paper's table (configs/papers/<table>/) and compare with the paper's numbers.

    Each block's teacher goes to reproduce/<table>/<block>/teacher.safetensors, its rows run through ablate
    (resumable: finished points are reused), and reproduce/<table>.md and .json give per cell the paper's number,
    the measured one with its 95 % interval and the difference, and per claim whether it holds. -S overrides apply
    to every block; the report's budget line names them."""
    if list_:
        listed = list_tables()
        typer.echo(tabulate(listed, headers="keys", tablefmt="simple") if listed else "no tables")
        return
    if table is None:
        raise AcdistillError(f"give a TABLE or --list; tables: {', '.join(table_ids()) or 'none'}")
    overrides = overrides_of(shared["set_"], jobs)
    chosen = [r.strip() for r in rows.split(",") if r.strip()] if rows is not None else None
    if dry_run:
        estimate_table(table, chosen, overrides)
        return
    run_table(table, rows=chosen, overrides=overrides, root=out, data_dir=shared["data_dir"], device=shared["device"])


def register(app: typer.Typer) -> None:
    app.command("reproduce")(user_errors(reproduce))
