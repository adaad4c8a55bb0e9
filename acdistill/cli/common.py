"""Options and helpers shared by the commands."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import torch
import typer

from acdistill.config import Params, TrainParams, load_params, parse_override
from acdistill.data import DATASETS, ImageSet, load_split
from acdistill.engine import resolve_device
from acdistill.distributed import Ranks, from_env, rank_of_env
from acdistill.errors import AcdistillError
from acdistill import formats
from acdistill.formats import format_names
from acdistill.methods import METHODS, Method
from acdistill.models import DATASET_STATS, create_model

TRAINING_STAGES = ("teacher", "distill", "aft")  # in the order the pipeline runs them; report and figures sort by it

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (missing params.yaml = all defaults)")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-S", help="override any params key, e.g. -S distill.ard.tau=10 (repeatable)")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="offline mirror of .npz files (default: $ACDISTILL_DATA_DIR, else torchvision download)")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: params 'device')")]
EpochsOpt = Annotated[Optional[int], typer.Option(help="override the section's epochs")]
ResumeOpt = Annotated[bool, typer.Option(help="continue from the last epoch checkpoint if its settings match")]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite a finished result already at the output path")]


def completion(names: Callable[[], list[str]], comma_separated: bool = False) -> Callable[[str], list[str]]:
    """Shell completion of an option from a registry's `names` (e.g. METHODS.names); with `comma_separated`, of the
    last item of a comma-separated list. Bad values are still refused by the command itself, with its one-line
    error, rather than by a click.Choice, whose message spans the usage text."""

    def complete(incomplete: str) -> list[str]:
        head, _, last = incomplete.rpartition(",") if comma_separated else ("", "", incomplete)
        return [f"{head},{name}" if head else name for name in names() if name.startswith(last)]

    return complete


FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", help=f"checkpoint layout of a state dict without a sidecar: {', '.join(format_names())} (default "
                     "auto; see `acdistill formats`)", autocompletion=completion(format_names))]
NormalizeOpt = Annotated[Optional[str], typer.Option(
    help="input normalization of weights that record none: none ([0, 1] inputs), dataset, or MEAN/STD with one "
         "or three values each (e.g. 0.5/0.25)")]


def user_errors(command: Callable) -> Callable:
    """Report an AcdistillError as one line on stderr with exit code 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AcdistillError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def writes(*files: str, dirs: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Declare which path options of a command it writes (files, and whole directories): once the command has
    validated its inputs and claimed them (`claim_outputs`, or its first write), their directories stay locked
    against other acdistill runs until it ends. Until then nothing is created, so a refused command leaves no
    directory and no lock file behind."""
    from acdistill.io import declared_outputs

    def wrap(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            if rank_of_env() != 0:  # under torchrun rank 0 alone writes, and holds the locks
                return command(*args, **kwargs)
            with declared_outputs(*(kwargs[name] for name in files if kwargs.get(name) is not None),
                                  dirs=[kwargs[name] for name in dirs if kwargs.get(name) is not None]):
                return command(*args, **kwargs)

        return wrapper

    return wrap


def load(params_path: Path, sets: list[str] | None, **direct: Any) -> Params:
    """params file < --set overrides < the command's own options (None = not given). Seeds torch's global RNG
    with `seed`, so that model initialization is the same in every run."""
    overrides = dict(parse_override(s) for s in sets or [])
    overrides.update({k: v for k, v in direct.items() if v is not None})
    params = load_params(params_path, overrides)
    torch.manual_seed(params.seed)
    return params


def parse_normalize(text: str | None) -> str | dict[str, list[float]] | None:
    """--normalize: none, dataset, or MEAN/STD as comma-separated lists -> the params value."""
    try:
        parsed = formats.parse_normalize(text)
    except AcdistillError as e:
        raise AcdistillError(f"--{e}") from None
    return {"mean": parsed[0], "std": parsed[1]} if isinstance(parsed, tuple) else parsed


def device_of(params: Params, option: str | None) -> torch.device:
    return resolve_device(option or params.device)


def monitor_split(params: Params, data_dir: Path | None, monitor_n: int) -> ImageSet:
    """The held-out monitor slice: the first `monitor_n` images of the test subset."""
    d = params.data
    return load_split(d.dataset, False, d.test_subset, d.root, data_dir).take(monitor_n)


def new_model(arch: str, params: Params, num_classes: int) -> torch.nn.Module:
    mean, std = DATASET_STATS[params.data.dataset]
    return create_model(arch, num_classes=num_classes, mean=mean, std=std)


def build_method(section: TrainParams, student: torch.nn.Module, teacher: torch.nn.Module | None) -> Method:
    cls = METHODS.get(section.method)
    return cls(student, teacher if cls.needs_teacher else None, section.method_params(), section.attack)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_classes(model: torch.nn.Module, dataset: str, what: str) -> None:
    expected = DATASETS.get(dataset).num_classes
    if model.arch_kwargs["num_classes"] != expected:
        raise AcdistillError(f"{what} has {model.arch_kwargs['num_classes']} classes but {dataset} has {expected}")


def echo(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)


def check_json_out(out: Path) -> None:
    """A results JSON gets its markdown table beside it (.md): any other suffix would have the table replace it."""
    if out.suffix != ".json":
        raise AcdistillError(f"--out {out}: the results are written as .json (the table goes beside it as .md)")


def refuse_overwrite(force: bool, *paths: Path) -> None:
    """A finished result is replaced only when the user asks for it with --force."""
    for path in paths:
        if path.exists() and not force:
            raise AcdistillError(f"{path} already holds a finished result; pass --force to overwrite it, or choose "
                                 f"another output path")


def check_outputs(out: Path, metrics: Path, force: bool) -> None:
    """Before any work: a bad output path found after hours of training would lose the run."""
    from acdistill.checkpoint import sidecar_path

    if out.suffix != ".safetensors":
        raise AcdistillError(f"--out {out}: checkpoints are written as .safetensors")
    if metrics.resolve() in (out.resolve(), sidecar_path(out).resolve()):
        raise AcdistillError(f"--metrics {metrics} would overwrite the checkpoint or its sidecar {sidecar_path(out)}")
    refuse_overwrite(force, out)


def train_and_save(stage: str, section: TrainParams, params: Params, *, student: torch.nn.Module,
                   teacher: torch.nn.Module | None, data_dir: Path | None, device: torch.device, out: Path,
                   metrics: Path, resume: bool, force: bool, context: dict[str, Any],
                   run_dir: Path | None = None) -> dict[str, Any]:
    """The body of every training stage: train `student` with `section`'s method, then write the checkpoint
    (weights + sidecar) and the stage's metrics JSON. Per-epoch state lives in models/state/<stage>.pt and
    curves in dvclive/<stage>/, or in `run_dir` (state.pt, dvclive/) when given. The output directories stay
    locked against other runs throughout."""
    from contextlib import nullcontext

    from acdistill.io import claim_outputs, output_lock

    state_path = run_dir / "state.pt" if run_dir else Path("models/state") / f"{stage}.pt"
    live_dir = run_dir / "dvclive" if run_dir else Path("dvclive") / stage
    ranks, device = from_env(device)
    check_outputs(out, metrics, force)
    claim_outputs()
    with output_lock(out, metrics, state_path) if ranks.main else nullcontext():
        return _train_and_save(stage, section, params, student=student, teacher=teacher, data_dir=data_dir,
                               device=device, out=out, metrics=metrics, resume=resume, context=context,
                               state_path=state_path, live_dir=live_dir, ranks=ranks)


def _train_and_save(stage: str, section: TrainParams, params: Params, *, student: torch.nn.Module,
                    teacher: torch.nn.Module | None, data_dir: Path | None, device: torch.device, out: Path,
                    metrics: Path, resume: bool, context: dict[str, Any], state_path: Path,
                    live_dir: Path, ranks: Ranks) -> dict[str, Any]:
    import time

    from acdistill.checkpoint import save_model
    from acdistill.engine import Trainer
    from acdistill.io import write_json

    d = params.data
    train = load_split(d.dataset, True, d.train_subset, d.root, data_dir)
    monitor = monitor_split(params, data_dir, section.monitor_n)
    check_classes(student, params.data.dataset, "the student")
    method = build_method(section, student.to(device), teacher.to(device) if teacher is not None else None)
    trainer = Trainer(method, section, seed=params.seed, device=device, label=stage, state_path=state_path,
                      live_dir=live_dir, context={"data": params.data.model_dump(), "arch": student.arch, **context},
                      ranks=ranks)
    start = time.perf_counter()
    history = trainer.fit(train, monitor, augment=params.data.augment, resume=resume)
    last = history[-1]
    summary = {"method": section.method, "epochs": section.epochs, "train_images": len(train),
               **{k: v for k, v in last.items() if k.endswith("_acc")},
               "minutes_this_run": round((time.perf_counter() - start) / 60, 2)}
    if not ranks.main:
        return summary
    save_model(student, out, dataset=params.data.dataset,
               info={"stage": stage, "params": section.model_dump(mode="json"), "seed": params.seed, **summary,
                     **{k: v for k, v in context.items() if k.endswith("_sha256")}})  # the report links runs by it
    write_json(metrics, summary)
    echo(f"{stage}: wrote {out} and {metrics}")
    return summary
