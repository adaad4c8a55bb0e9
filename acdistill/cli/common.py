"""Options and helpers shared by the commands: the option types, shell completion from the registries, the
one-line error, and params from the params file, -S overrides and the command's own options."""

from __future__ import annotations

import functools
import inspect
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill import formats
from acdistill.config import Params, load_params, parse_override
from acdistill.errors import AcdistillError, on_first_process
from acdistill.formats import format_names

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (missing params.yaml = all defaults)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="override any params key, e.g. -S distill.ard.tau=10 (repeatable)"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="offline mirror of .npz files (default: $ACDISTILL_DATA_DIR, else torchvision download)"
    ),
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: params 'device')")]
EpochsOpt = Annotated[int | None, typer.Option(help="override the section's epochs")]
ResumeOpt = Annotated[bool, typer.Option(help="continue from the last epoch checkpoint if its settings match")]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite a finished result already at the output path")]
MetricsOpt = Annotated[Path | None, typer.Option(help="metrics JSON to write (default: metrics/<name of --out>.json)")]
TeacherOpt = Annotated[Path, typer.Option(help="teacher checkpoint")]


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


# The options that several commands take, each declared once: `shared_options` adds them to a command.
SHARED = {
    option.name: option
    for option in (
        _keyword("params_file", ParamsOpt, Path("params.yaml")),
        _keyword("metrics", MetricsOpt, None),
        _keyword("data_dir", DataDirOpt, None),
        _keyword("device", DeviceOpt, None),
        _keyword("resume", ResumeOpt, True),
        _keyword("force", ForceOpt, False),
        _keyword("set_", SetOpt, None),
    )
}
# After a training stage's own options (its params file comes first).
TRAINING = ("metrics", "data_dir", "device", "resume", "force", "set_")
# After the own options of the other stages.
STAGE = ("params_file", "data_dir", "device", "set_")


def shared_options(first: tuple[str, ...] = (), last: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """A command's options: the SHARED ones named in `first`, its own, then those named in `last`, in that order in
    --help. The command declares `**shared`, which gets the shared ones by name, for `load`."""

    def declare(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters.values()
        options = [
            *(SHARED[name] for name in first),
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.kind is not p.VAR_KEYWORD),
            *(SHARED[name] for name in last),
        ]
        command.__signature__ = inspect.Signature(options)
        return command

    return declare


def given(section: str, **values: Any) -> dict[str, tuple[str, Any]]:
    """`load`'s options for the command options named after the keys of `section` they set: given("eval",
    batch_size=64) -> {"eval.batch_size": ("--batch-size", 64)}."""
    return {f"{section}.{name}": (f"--{name.replace('_', '-')}", value) for name, value in values.items()}


def completion(names: Callable[[], list[str]], comma_separated: bool = False) -> Callable[[str], list[str]]:
    """Shell completion of an option from a registry's `names` (e.g. METHODS.names); with `comma_separated`, of the
    last item of a comma-separated list. Bad values are still refused by the command itself, with its one-line
    error, rather than by a click.Choice, whose message spans the usage text."""

    def complete(incomplete: str) -> list[str]:
        head, _, last = incomplete.rpartition(",") if comma_separated else ("", "", incomplete)
        return [f"{head},{name}" if head else name for name in names() if name.startswith(last)]

    return complete


def choice(
    help: str, names: Callable[[], list[str]], after: str = "", *flags: str, comma_separated: bool = False
) -> Any:
    """An option whose value is a registered name (or a comma-separated list of them): its help lists the names as
    they are when the CLI is built, between `help` and `after`, and the shell completes them when asked."""
    return typer.Option(
        *flags, help=f"{help}{', '.join(names())}{after}", autocompletion=completion(names, comma_separated)
    )


FormatOpt = Annotated[
    str | None,
    choice(
        "checkpoint layout of a state dict without a sidecar: ",
        format_names,
        " (default auto; see `acdistill formats`)",
        "--format",
    ),
]
NormalizeOpt = Annotated[
    str | None,
    typer.Option(
        help="input normalization of weights that record none: none ([0, 1] inputs), dataset, or MEAN/STD with one "
        "or three values each (e.g. 0.5/0.25)"
    ),
]


def user_errors(command: Callable) -> Callable:
    """Report an AcdistillError as one line on stderr with exit code 2, and Ctrl-C as one line with exit code 130
    (what the run kept, when it says), instead of a traceback. SIGTERM (`kill`, a scheduler's stop) is handled as
    Ctrl-C is, so a run releases its locks and says what it kept; its exit code is 143 (128 + SIGTERM)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        received = []

        def on_sigterm(signum, _frame):
            received.append(signum)
            raise KeyboardInterrupt

        previous = None
        if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            return command(*args, **kwargs)
        except AcdistillError as e:
            if on_first_process():  # under torchrun every rank fails alike; one says so
                typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            if on_first_process():
                typer.echo((str(e) or "interrupted") + (" (SIGTERM)" if received else ""), err=True)
            raise typer.Exit(128 + (signal.SIGTERM if received else signal.SIGINT)) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def load(shared: dict[str, Any], options: dict[str, tuple[str, Any]] | None = None) -> tuple[Params, dict[str, Any]]:
    """A command's params, and the rest of its `shared` options (of `shared_options`), which its pipeline stage
    takes. The params: the params file (`shared["params_file"]`) < its -S overrides (`shared["set_"]`) < the
    command's own `options`: {params key: (option, value)}, None = not given. An invalid value is reported as given
    (`-S distill.method=foo: ...`, `--method foo: ...`)."""
    overrides, given_as = {}, {}
    for text in shared["set_"] or []:
        key, overrides[key] = parse_override(text)
        given_as[key] = f"-S {text}"
    for key, (option, value) in (options or {}).items():
        if value is not None:
            overrides[key] = value
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            given_as[key] = f"{option} {shown}"
    stage = {name: value for name, value in shared.items() if name not in ("params_file", "set_")}
    return load_params(shared["params_file"], overrides, given_as), stage


def parse_normalize(text: str | None) -> str | dict[str, list[float]] | None:
    """--normalize: none, dataset, or MEAN/STD as comma-separated lists -> the params value."""
    try:
        parsed = formats.parse_normalize(text)
    except AcdistillError as e:
        raise AcdistillError(f"--{e}") from None
    return {"mean": parsed[0], "std": parsed[1]} if isinstance(parsed, tuple) else parsed
