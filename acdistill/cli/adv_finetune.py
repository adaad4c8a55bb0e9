"""acdistill adv-finetune: short PGD-AT of a distilled student (GACD's AFT stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from acdistill.checkpoint import load_model, read_sidecar
from acdistill.cli.common import (DataDirOpt, DeviceOpt, EpochsOpt, ForceOpt, ParamsOpt, ResumeOpt, SetOpt, device_of,
                                  freeze, load, train_and_save, user_errors, writes)
from acdistill.config import Params
from acdistill.methods import METHODS


def adv_finetune(
    params_file: ParamsOpt = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="student checkpoint to fine-tune")] = Path("models/student.safetensors"),
    epochs: EpochsOpt = None,
    lr: Annotated[Optional[float], typer.Option(help="override aft.lr")] = None,
    teacher: Annotated[Path, typer.Option(help="teacher, for an aft.method that needs one")] = Path(
        "models/teacher.safetensors"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("models/student_aft.safetensors"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/aft.json"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Adversarially fine-tune a student (params section `aft`, PGD-AT with a small lr by default)."""
    params = load(params_file, set_, **{"aft.epochs": epochs, "aft.lr": lr})
    run_aft(params, model=model, teacher=teacher, out=out, metrics=metrics, data_dir=data_dir,
            device=device_of(params, device), resume=resume, force=force)


def run_aft(params: Params, *, model: Path, teacher: Path, out: Path, metrics: Path, data_dir: Path | None,
            device: torch.device, resume: bool, force: bool, run_dir: Path | None = None) -> dict[str, Any]:
    """Fine-tune the student at `model` with the `aft` section; `run_dir` as in `train_and_save`. Unless `aft.epochs`
    is set, the fine-tuning lasts a tenth of the student's distillation epochs (at least 1)."""
    student = load_model(model, device).train()
    sidecar = read_sidecar(model)
    info = sidecar.get("info", {})
    cfg = params.aft.for_student(info.get("epochs") if info.get("stage") == "distill" else None, str(model))
    context = {"student_sha256": sidecar["sha256"]}
    teacher_model = None
    if METHODS.get(cfg.method).needs_teacher:
        teacher_model = freeze(load_model(teacher, device))
        context["teacher_sha256"] = read_sidecar(teacher)["sha256"]
    return train_and_save("aft", cfg, params, student=student, teacher=teacher_model, data_dir=data_dir,
                          device=device, out=out, metrics=metrics, resume=resume, force=force, context=context,
                          run_dir=run_dir)


def register(app: typer.Typer) -> None:
    app.command("adv-finetune")(user_errors(writes("out", "metrics")(adv_finetune)))
