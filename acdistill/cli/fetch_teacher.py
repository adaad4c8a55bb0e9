"""acdistill fetch-teacher: a teacher from a RobustBench name, a released checkpoint file, a URL, or trained here."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from acdistill.cli.attack_eval import ProgressBars
from acdistill.cli.common import (DataDirOpt, DeviceOpt, EpochsOpt, ForceOpt, FormatOpt, NormalizeOpt, ParamsOpt,
                                  ResumeOpt, SetOpt, check_outputs, device_of, echo, load, parse_normalize,
                                  train_and_save, user_errors, writes)
from acdistill.data import DATASETS
from acdistill.errors import AcdistillError
from acdistill.formats import normalization_values
from acdistill.models import create_model
from acdistill.teachers import import_teacher


def fetch_teacher(
    params_file: ParamsOpt = Path("params.yaml"),
    source: Annotated[Optional[str], typer.Option(
        help="robustbench, file, url or train (default: params teacher.source)")] = None,
    path: Annotated[Optional[Path], typer.Option(help="local .safetensors or .pt (source file)")] = None,
    url: Annotated[Optional[str], typer.Option(help="download URL (source url, needs --sha256)")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="expected sha256 of the download")] = None,
    arch: Annotated[Optional[str], typer.Option(
        help="architecture to train, or of a bare state dict in acdistill's layout (see `acdistill models`)")] = None,
    format: FormatOpt = None,
    normalize: NormalizeOpt = None,
    strict_accuracy: Annotated[bool, typer.Option(
        "--strict-accuracy", help="fail when the clean accuracy is over 5 points below the source's")] = False,
    epochs: EpochsOpt = None,
    out: Annotated[Path, typer.Option(help="teacher checkpoint to write")] = Path("models/teacher.safetensors"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/teacher.json"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Get the robust teacher: a RobustBench entry, a released checkpoint (file or url), or train one here."""
    params = load(params_file, set_, **{"teacher.source": source, "teacher.path": str(path) if path else None,
                                        "teacher.url": url, "teacher.sha256": sha256, "teacher.arch": arch,
                                        "teacher.format": format, "teacher.normalize": parse_normalize(normalize),
                                        "teacher.strict_accuracy": strict_accuracy or None,
                                        "teacher.train.epochs": epochs})
    t = params.teacher
    if arch is not None and t.source == "robustbench":
        raise AcdistillError("--arch does not apply to source robustbench: the entry names its architecture")
    check_outputs(out, metrics, force)
    dev = device_of(params, device)
    if t.source == "train":
        from acdistill.methods import METHODS

        mean, std = normalization_values(t.normalization() or "dataset", params.data.dataset)
        model = create_model(t.arch, num_classes=DATASETS.get(params.data.dataset).num_classes, mean=mean, std=std)
        if METHODS.get(t.train.method).needs_teacher:
            raise AcdistillError(f"teacher.train.method '{t.train.method}' needs a teacher itself; "
                                 "use natural, sat or trades")
        train_and_save("teacher", t.train, params, student=model, teacher=None, data_dir=data_dir, device=dev,
                       out=out, metrics=metrics, resume=resume, force=force, context={})
        return
    with ProgressBars() as progress:
        summary = import_teacher(params, out=out, metrics=metrics, data_dir=data_dir, device=dev, arch=arch,
                                 progress=progress)
    expected = summary["expected_clean_acc"]
    stated = f", {expected:.2f} % stated by its source" if expected is not None else ""
    echo(f"fetch-teacher: {summary['file']} ({summary['format']}, {summary['arch']}) -> {out}: clean accuracy "
         f"{summary['clean_acc']:.2f} % on the first {summary['clean_acc_n']} test images{stated}")


def register(app: typer.Typer) -> None:
    app.command("fetch-teacher")(user_errors(writes("out", "metrics")(fetch_teacher)))
