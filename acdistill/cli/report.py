"""acdistill report: one markdown page across the finished runs of a workspace.

A run is a checkpoint with our sidecar under models/ (its stage, method, epochs, minutes and teacher come from the
sidecar); its accuracies come from metrics/eval_<name>.json when attack-eval has run on it. Ablation points,
the linear probe and the figures are added when their files exist; with --experiments, the evaluations of every
commit and `dvc exp` experiment too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdistill.cli.common import user_errors
from acdistill.pipeline import report as run


def report(
    models: Annotated[Path, typer.Option(help="directory of checkpoints")] = Path("models"),
    metrics: Annotated[Path, typer.Option(help="directory of metrics JSON")] = Path("metrics"),
    figures: Annotated[Path, typer.Option(help="directory of figures (acdistill figures)")] = Path("figures"),
    out: Annotated[Path, typer.Option(help="markdown page to write")] = Path("report.md"),
    experiments: Annotated[
        bool,
        typer.Option(
            "--experiments",
            help="add every commit and `dvc exp` experiment of the repository (from `dvc exp show`); "
            "not inside `dvc repro`, which holds the repository lock",
        ),
    ] = False,
) -> None:
    """Write one markdown page of the workspace's runs, ablation, probe and figures.

    Every run (teacher, students: method, time, accuracy per attack), the ablation, the linear probe, and links to
    the figures."""
    run(models=models, metrics=metrics, figures=figures, out=out, experiments=experiments)


def register(app: typer.Typer) -> None:
    app.command("report")(user_errors(report))
