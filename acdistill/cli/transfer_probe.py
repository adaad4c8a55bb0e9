"""acdistill transfer-probe: do a model's frozen features transfer to another dataset, and stay robust there?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdistill.cli.common import DataDirOpt, DeviceOpt, ForceOpt, ParamsOpt, SetOpt, load, user_errors
from acdistill.pipeline import probe
from acdistill.pipeline.common import PROBE_HEAD_CHECKPOINT, STUDENT_CHECKPOINT


def transfer_probe(
    model: Annotated[Path, typer.Option(help="checkpoint whose features are probed (frozen)")] = STUDENT_CHECKPOINT,
    dataset: Annotated[str | None, typer.Option(help="target dataset (default: probe.dataset)")] = None,
    out: Annotated[Path, typer.Option(help="metrics JSON to write; a markdown table goes beside it (.md)")] = Path(
        "metrics/probe.json"
    ),
    head: Annotated[
        Path, typer.Option(help="the trained linear head (.safetensors + .json sidecar)")
    ] = PROBE_HEAD_CHECKPOINT,
    force: ForceOpt = False,
    params_file: ParamsOpt = Path("params.yaml"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Probe a model's frozen features with a linear head on another dataset (params section `probe`).

    The head is trained on the target dataset, then the frozen model and the head are attacked together: clean and
    PGD-7 accuracy."""
    params = load(params_file, set_, **{"probe.dataset": ("--dataset", dataset)})
    probe(params, model=model, out=out, head=head, force=force, data_dir=data_dir, device=device)


def register(app: typer.Typer) -> None:
    app.command("transfer-probe")(user_errors(transfer_probe))
