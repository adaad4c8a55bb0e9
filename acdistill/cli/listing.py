"""acdistill models / methods / attacks: what the registries hold."""
import typer

from acdistill.attacks import EVAL_ATTACKS
from acdistill.methods import METHODS
from acdistill.models import list_models


def models() -> None:
    """List the model architectures."""
    typer.echo("\n".join(list_models()))


def methods() -> None:
    """List the training methods, with the first line of each docstring."""
    for name in METHODS.names():
        doc = (METHODS.get(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:10s} {doc[0] if doc else ''}")


def attacks() -> None:
    """List the evaluation attacks."""
    for name in EVAL_ATTACKS.names():
        typer.echo(f"{name:12s} {EVAL_ATTACKS.get(name).description}")


def register(app: typer.Typer) -> None:
    for command in (models, methods, attacks):
        app.command()(command)
