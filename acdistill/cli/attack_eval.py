"""acdistill attack-eval: accuracy of a model under each attack, as JSON, a terminal table and markdown."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tabulate import tabulate

import torch

from acdistill.checkpoint import load_model, load_weights_into, read_sidecar, read_state_dict
from acdistill.cli.common import DataDirOpt, DeviceOpt, ParamsOpt, SetOpt, device_of, echo, load, new_model, user_errors
from acdistill.data import DATASETS, load_split
from acdistill.engine import evaluate
from acdistill.engine.trainer import console
from acdistill.errors import AcdistillError
from acdistill.io import write_json, write_text


# Points of clean accuracy below the checkpoint's own record that signal a wrong setup rather than sampling noise
# (the record comes from a different slice of the test set, of a few hundred images).
CLEAN_DROP_WARNING = 15.0


def open_model(path: Path, arch: str | None, normalize: str, params, device) -> tuple[torch.nn.Module, float | None]:
    """Our checkpoint with the clean accuracy recorded in its sidecar, or a third-party state dict built as `arch`."""
    if arch is None:
        return load_model(path, device), read_sidecar(path).get("info", {}).get("clean_acc")
    if normalize not in ("dataset", "none"):
        raise AcdistillError(f"--normalize must be 'dataset' or 'none', got '{normalize}'")
    net = new_model(arch, params, DATASETS.get(params.data.dataset).num_classes, normalize=normalize == "dataset")
    load_weights_into(net, read_state_dict(path), path)
    return net.to(device).eval(), None


def results_table(results: dict[str, dict], fmt: str) -> str:
    rows = [[name, f"{r['accuracy']:.2f}", f"{r['worst_class']:.2f}", r["n"], f"{r['seconds']:.1f}"]
            for name, r in results.items()]
    return tabulate(rows, headers=["attack", "accuracy %", "worst class %", "n", "seconds"], tablefmt=fmt)


def attack_eval(
    model: Annotated[Path, typer.Option(help="checkpoint: ours (.safetensors + .json sidecar), or any state dict "
                                             "(.safetensors / .pt) with --arch")],
    arch: Annotated[Optional[str], typer.Option(
        help="architecture of a third-party state dict (a .pt is read with weights_only=True)")] = None,
    normalize: Annotated[str, typer.Option(
        help="with --arch: 'dataset' adds the dataset's mean/std inside the model, 'none' for weights trained on "
             "unnormalized [0, 1] inputs")] = "dataset",
    attacks: Annotated[Optional[str], typer.Option(help="comma-separated, see `acdistill attacks`")] = None,
    n: Annotated[Optional[int], typer.Option(help="evaluate the first n test images")] = None,
    eps: Annotated[Optional[str], typer.Option(help="L-inf budget, e.g. 8/255")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="attack batch size")] = None,
    out: Annotated[Optional[Path], typer.Option(help="JSON to write; a markdown table goes beside it (.md)")] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate a model under attacks on the params' test subset (section `eval`)."""
    attack_list = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    params = load(params_file, set_, **{"eval.attacks": attack_list, "eval.n": n, "eval.eps": eps,
                                        "eval.batch_size": batch_size})
    cfg = params.eval
    dev = device_of(params, device)
    net, recorded_clean = open_model(model, arch, normalize, params, dev)
    test = load_split(params.data.dataset, False, params.data.test_subset, params.data.root, data_dir)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True)
    tasks: dict[str, int] = {}

    def progress(name: str, done: int, total: int) -> None:
        if not tasks:  # started on the first batch, so an input error is not preceded by a bar's blank line
            bar.start()
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.advance(tasks[name], done)

    try:
        results = evaluate(net, test, cfg.attacks, eps=cfg.eps, batch_size=cfg.batch_size, n=cfg.n, seed=params.seed,
                           device=dev, progress=progress)
    finally:
        if tasks:
            bar.stop()
    echo(f"{model} on {params.data.dataset} (eps {cfg.eps:.5f})")
    clean = results.get("natural", {}).get("accuracy")
    if clean is not None and recorded_clean is not None and clean < recorded_clean - CLEAN_DROP_WARNING:
        typer.echo(f"warning: clean accuracy {clean:.1f} % is far below the {recorded_clean:.1f} % recorded with "
                   f"{model}; a wrong normalization or dataset is the usual cause", err=True)
    echo(results_table(results, "simple"))
    if out is not None:
        write_json(out, results)
        md = out.with_suffix(".md")
        write_text(md, f"# {model.stem}: attack evaluation\n\nmodel `{model}`, dataset {params.data.dataset}, "
                       f"eps {cfg.eps:.5f}, seed {params.seed}\n\n{results_table(results, 'github')}\n")
        echo(f"wrote {out} and {md}")


def register(app: typer.Typer) -> None:
    app.command("attack-eval")(user_errors(attack_eval))
