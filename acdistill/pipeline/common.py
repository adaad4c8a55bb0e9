"""What every stage shares: declaring and locking its outputs, checking output paths before the work, building the
student and the method, the training-and-saving body of the training stages, and printing."""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from acdistill.checkpoint import read_sidecar, save_model, sidecar_path
from acdistill.config import Params, TrainParams
from acdistill.data import DATASETS, ImageSet, load_split
from acdistill.data.datasets import check_subsets
from acdistill.distributed import from_env
from acdistill.engine import Trainer, resolve_device
from acdistill.engine.trainer import check_settings
from acdistill.errors import AcdistillError, on_first_process
from acdistill.io import claim_outputs, declared_outputs, output_lock, write_json
from acdistill.methods import METHODS, Method
from acdistill.models import create_model

TRAINING_STAGES = ("teacher", "distill", "aft")  # in the order the pipeline runs them; the report sorts by it
PIPELINE_MODELS = ("teacher", "student", "student_aft")  # their checkpoints' default names; figures sort by them
# Where the pipeline's stages read and write their checkpoints unless told otherwise (dvc.yaml's outs)
TEACHER_CHECKPOINT, STUDENT_CHECKPOINT, STUDENT_AFT_CHECKPOINT, PROBE_HEAD_CHECKPOINT = (
    Path("models") / f"{name}.safetensors" for name in (*PIPELINE_MODELS, "probe_head")
)


def writes(*outputs: str) -> Callable[[Callable], Callable]:
    """Declare which path arguments of a stage name what it writes (a file, whose siblings of the same stem such as
    its .md table go with it, or a directory it fills): once the stage has validated its inputs and claimed them
    (`claim_outputs`, or its first write), each is locked against other acdistill runs until the stage ends.
    Until then nothing is created, so a refused stage leaves no directory and no lock file behind."""

    def wrap(stage: Callable) -> Callable:
        signature = inspect.signature(stage)

        @functools.wraps(stage)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = bound.arguments
            for name in outputs:  # Python callers may pass strings
                if given.get(name) is not None:
                    given[name] = Path(given[name])
            if not on_first_process():  # under torchrun rank 0 alone writes, and holds the locks
                return stage(*bound.args, **bound.kwargs)
            with declared_outputs(*(given[name] for name in outputs if given.get(name) is not None)):
                return stage(*bound.args, **bound.kwargs)

        return wrapper

    return wrap


def device_of(params: Params, device: str | torch.device | None) -> torch.device:
    """The device a stage runs on: the one given, else params' `device` (auto picks CUDA, then MPS, then CPU)."""
    return device if isinstance(device, torch.device) else resolve_device(device or params.device)


def echo(msg: str) -> None:
    """A stage's report on stdout (warnings and progress bars go to stderr)."""
    print(msg, file=sys.stdout, flush=True)


def check_data(params: Params, data_dir: Path | None, use: str) -> None:
    """The subsets a stage reads, checked before any file is written (`check_subsets`): "train" the training
    subset and the monitor's test images, "eval" the images the eval section measures."""
    d = params.data
    if use == "train":
        subsets = {"data.train_subset": d.train_subset, "data.test_subset": d.test_subset}
    elif params.eval.split == "val":
        if d.val_subset is None:
            raise AcdistillError("eval.split 'val' needs data.val_subset: the training images held out for it")
        subsets = {"data.val_subset": d.val_subset}
    else:
        subsets = {"data.test_subset": d.test_subset}
    check_subsets(d.dataset, subsets, held_out=(d.train_subset, d.val_subset), data_dir=data_dir)


def evaluation_split(params: Params, data_dir: Path | None) -> ImageSet:
    """The images the `eval` section measures: data.test_subset of the test split, or with eval.split val the
    training images of data.val_subset, which no training may see."""
    d = params.data
    if params.eval.split == "val":
        check_data(params, data_dir, "eval")
        return load_split(d.dataset, True, d.val_subset, d.root, data_dir)
    return load_split(d.dataset, False, d.test_subset, d.root, data_dir)


def monitor_split(params: Params, data_dir: Path | None, monitor_n: int) -> ImageSet:
    """The held-out monitor slice: the first `monitor_n` images of the test subset."""
    d = params.data
    return load_split(d.dataset, False, d.test_subset, d.root, data_dir).take(monitor_n)


def new_model(arch: str, params: Params, num_classes: int) -> torch.nn.Module:
    spec = DATASETS.get(params.data.dataset)
    return create_model(arch, num_classes=num_classes, mean=spec.mean, std=spec.std)


def build_method(section: TrainParams, student: torch.nn.Module, teacher: torch.nn.Module | None) -> Method:
    cls = METHODS.get(section.method)
    return cls(student, teacher if cls.needs_teacher else None, section.method_params(), section.attack)


def teacher_sha256(teacher: Path, params: Params) -> str:
    """The sha256 of the teacher checkpoint at `teacher`, once its sidecar shows a model of data.dataset's classes,
    trained on data.dataset unless teacher.cross_dataset: called before any file is written."""
    if not Path(teacher).is_file():
        raise AcdistillError(
            f"model file not found: {teacher}; get a teacher first with `acdistill fetch-teacher` (or `dvc repro "
            "fetch-teacher`)"
        )
    side = read_sidecar(teacher)
    ours = params.data.dataset
    classes = DATASETS.get(ours).num_classes
    if side.get("num_classes", side["arch_kwargs"].get("num_classes")) != classes:
        raise AcdistillError(
            f"teacher {teacher} has {side.get('num_classes')} classes (its sidecar says), but {ours} has {classes}"
        )
    check_trained_on(teacher, params, "teacher", params.teacher.cross_dataset, "teacher.cross_dataset")
    return side["sha256"]


def check_trained_on(model: Path, params: Params, role: str, accepted: bool, override: str) -> None:
    """Refuse a checkpoint whose sidecar names a dataset other than data.dataset, unless `accepted` (the params
    key `override` is true): a CIFAR-10 model run on MNIST has the class count right and every number wrong. A
    file without a sidecar (a released one) records no dataset, and passes."""
    if not sidecar_path(model).is_file():
        return
    trained_on = read_sidecar(model)["dataset"]
    if trained_on != params.data.dataset and not accepted:
        raise AcdistillError(
            f"{role} {model} was trained on {trained_on} (its sidecar says), but data.dataset is "
            f"{params.data.dataset}; set {override}: true to use it across datasets on purpose"
        )


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_classes(model: torch.nn.Module, dataset: str, what: str) -> None:
    expected = DATASETS.get(dataset).num_classes
    if model.arch_kwargs["num_classes"] != expected:
        raise AcdistillError(f"{what} has {model.arch_kwargs['num_classes']} classes but {dataset} has {expected}")


def details_path(out: Path) -> Path:
    """Where a stage writes what its metrics file `out` leaves out (counts, timings, per-class accuracies, settings):
    `<stem>_details.json` beside it, an output that `dvc metrics` does not read."""
    return out.with_name(f"{out.stem}_details.json")


def accuracy_metrics(results: dict[str, dict]) -> dict[str, Any]:
    """What `dvc metrics show` and `diff` compare: {attack: {accuracy (%), ci95: [low, high] (%)}}; DVC shows the
    scalar accuracy and skips the interval, which `acdistill report` prints beside it."""
    return {name: {"accuracy": r["accuracy"], "ci95": r.get("ci95")} for name, r in results.items()}


def write_stage_metrics(path: Path, summary: dict[str, Any]) -> None:
    """A training stage's metrics file: its monitored accuracies (%) alone; the rest of its summary (method, epochs,
    images, minutes) is in the checkpoint's sidecar."""
    write_json(path, {k: v for k, v in summary.items() if k.endswith("_acc")})


def check_json_out(out: Path) -> None:
    """A results JSON gets its markdown table beside it (.md): any other suffix would have the table replace it."""
    if out.suffix != ".json":
        raise AcdistillError(f"--out {out}: the results are written as .json (the table goes beside it as .md)")


def refuse_overwrite(force: bool, *paths: Path) -> None:
    """A finished result is replaced only when the user asks for it with --force."""
    for path in paths:
        if path.exists() and not force:
            raise AcdistillError(
                f"{path} already holds a finished result; pass --force to overwrite it, or choose another output path"
            )


def metrics_path(out: Path, metrics: Path | None) -> Path:
    """A training stage's metrics file: `metrics` when given, else metrics/<out's stem>.json, so that runs with
    different checkpoints never share one. Called first, so that a bad output path is refused before the inputs are
    read, and long before hours of training: an `out` that is not .safetensors, or a metrics file that would
    overwrite the checkpoint or its sidecar."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise AcdistillError(f"--out {out}: checkpoints are written as .safetensors")
    metrics = Path(metrics) if metrics is not None else Path("metrics") / f"{out.stem}.json"
    if metrics.resolve() in (out.resolve(), sidecar_path(out).resolve()):
        raise AcdistillError(f"--metrics {metrics} would overwrite the checkpoint or its sidecar {sidecar_path(out)}")
    return metrics


def train_and_save(
    stage: str,
    section: TrainParams,
    params: Params,
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    context: dict[str, Any],
    data_dir: Path | None,
    device: torch.device,
    out: Path,
    metrics: Path,
    resume: bool,
    force: bool,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The body of every training stage: train `student` with `section`'s method, then write the checkpoint
    (weights + sidecar) and the stage's metrics JSON. Per-epoch state and curves belong to the checkpoint they
    lead to: <out's directory>/state/<out's stem>.pt and dvclive/<out's stem>/ (models/state/student.pt and
    dvclive/student/ for models/student.safetensors), or `run_dir`'s state.pt and dvclive/ when given. Each is
    locked against other runs throughout, so runs with different checkpoints go ahead side by side."""
    state_path = run_dir / "state.pt" if run_dir else out.parent / "state" / f"{out.stem}.pt"
    live_dir = run_dir / "dvclive" if run_dir else Path("dvclive") / out.stem
    ranks, device = from_env(device)
    refuse_overwrite(force, out)
    check_settings(section, params.speed, device, METHODS.get(section.method), ranks)
    check_data(params, data_dir, "train")
    claim_outputs()
    with output_lock(out, metrics, state_path, live_dir) if ranks.main else nullcontext():
        d = params.data
        train = load_split(d.dataset, True, d.train_subset, d.root, data_dir)
        monitor = monitor_split(params, data_dir, section.monitor_n)
        check_classes(student, params.data.dataset, "the student")
        method = build_method(section, student.to(device), teacher.to(device) if teacher is not None else None)
        trainer = Trainer(
            method,
            section,
            seed=params.seed,
            device=device,
            speed=params.speed,
            label=stage,
            state_path=state_path,
            live_dir=live_dir,
            context={
                "data": params.data.for_training(),
                "train_images": train.digest(),  # the data itself, whatever its source
                "arch": student.arch,
                **context,
            },
            ranks=ranks,
        )
        start = time.perf_counter()
        history = trainer.fit(train, monitor, augment=params.data.augment, resume=resume)
        summary = {
            "method": section.method,
            "epochs": section.epochs,
            "train_images": len(train),
            **{k: v for k, v in history[-1].items() if k.endswith("_acc")},
            "minutes_this_run": round((time.perf_counter() - start) / 60, 2),
        }
        if ranks.main:
            save_trained(stage, section, params, student, summary, context, out, metrics)
        return summary


def save_trained(
    stage: str,
    section: TrainParams,
    params: Params,
    student: torch.nn.Module,
    summary: dict[str, Any],
    context: dict[str, Any],
    out: Path,
    metrics: Path,
) -> None:
    """A training stage's outputs: the checkpoint, whose sidecar records the section, the seed, the summary and the
    sha256 of the models it started from (the report links runs by it), then the metrics JSON."""
    info = {
        "stage": stage,
        "params": section.model_dump(mode="json"),
        "seed": params.seed,
        **summary,
        **{k: v for k, v in context.items() if k.endswith("_sha256")},
    }
    save_model(student, out, dataset=params.data.dataset, info=info)
    write_stage_metrics(metrics, summary)
    echo(f"{stage}: wrote {out} and {metrics}")
