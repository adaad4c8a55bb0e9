"""acdistill models / methods / attacks / formats: what the registries hold."""

import typer

from acdistill.attacks import EVAL_ATTACKS
from acdistill.formats import AUTO, FORMATS
from acdistill.methods import METHODS
from acdistill.models import list_families, list_models
from acdistill.models.zoo import PREFIX


def models() -> None:
    """List the model architectures, the families of sizes, and RobustBench's zoo."""
    typer.echo("\n".join(list_models()))
    typer.echo(f"\nfamilies (any size): {', '.join(list_families())}")
    typer.echo(f"RobustBench's zoo: {PREFIX}<name> (the robustbench extra)")


def methods() -> None:
    """List the training methods, with the first line of each docstring."""
    for name in METHODS.names():
        doc = (METHODS.get(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:10s} {doc[0] if doc else ''}")


def attacks() -> None:
    """List the evaluation attacks."""
    for name in EVAL_ATTACKS.names():
        typer.echo(f"{name:12s} {EVAL_ATTACKS.get(name).description}")


def formats() -> None:
    """List the checkpoint layouts that fetch-teacher, attack-eval and load_model read."""
    typer.echo(f"{AUTO:24s} detect the layout from the file's keys (refused when two formats fit)")
    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        typer.echo(f"{name:24s} {fmt.source}\n{'':24s} normalization: {fmt.normalization_hint}")


def register(app: typer.Typer) -> None:
    for command in (models, methods, attacks, formats):
        app.command()(command)
