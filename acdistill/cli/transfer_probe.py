"""acdistill transfer-probe: do a model's frozen features transfer to another dataset, and stay robust there?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.cli.common import STAGE, choice, given, load, shared_options, user_errors
from acdistill.data import DATASETS
from acdistill.pipeline import probe
from acdistill.pipeline.common import PROBE_HEAD_CHECKPOINT, STUDENT_CHECKPOINT


@shared_options(last=("force", *STAGE))
def transfer_probe(
    model: Annotated[Path, typer.Option(help="checkpoint whose features are probed (frozen)")] = STUDENT_CHECKPOINT,
    dataset: Annotated[
        str | None,
        choice("target dataset: ", DATASETS.names, " (default: probe.dataset)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="metrics JSON to write; a markdown table goes beside it (.md)")] = Path(
        "metrics/probe.json"
    ),
    head: Annotated[
        Path, typer.Option(help="the trained linear head (.safetensors + .json sidecar)")
    ] = PROBE_HEAD_CHECKPOINT,
    **shared: Any,
) -> None:
    """Probe a model's frozen features with a linear head on another dataset (params section `probe`).

    The head is trained on the target dataset, then the frozen model and the head are attacked together: clean and
    PGD-7 accuracy."""
    params, stage = load(shared, given("probe", dataset=dataset))
    probe(params, model=model, out=out, head=head, **stage)


def register(app: typer.Typer) -> None:
    app.command("transfer-probe")(user_errors(transfer_probe))
