"""acdistill attack-eval: accuracy of a model under each attack, as JSON, a terminal table and markdown."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tabulate import tabulate

from acdistill.checkpoint import load_model
from acdistill.cli.common import DataDirOpt, DeviceOpt, ParamsOpt, SetOpt, device_of, echo, load, user_errors
from acdistill.data import load_split
from acdistill.engine import evaluate
from acdistill.engine.trainer import console
from acdistill.io import write_json, write_text


def results_table(results: dict[str, dict], fmt: str) -> str:
    rows = [[name, f"{r['accuracy']:.2f}", f"{r['worst_class']:.2f}", r["n"], f"{r['seconds']:.1f}"]
            for name, r in results.items()]
    return tabulate(rows, headers=["attack", "accuracy %", "worst class %", "n", "seconds"], tablefmt=fmt)


def attack_eval(
    model: Annotated[Path, typer.Option(help="checkpoint (.safetensors with its .json sidecar)")],
    attacks: Annotated[Optional[str], typer.Option(help="comma-separated: natural,fgsm,pgd20,pgd7,pgd-trades,cw-inf")] = None,
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
    net = load_model(model, dev)
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
    echo(results_table(results, "simple"))
    if out is not None:
        write_json(out, results)
        md = out.with_suffix(".md")
        write_text(md, f"# {model.stem}: attack evaluation\n\nmodel `{model}`, dataset {params.data.dataset}, "
                       f"eps {cfg.eps:.5f}, seed {params.seed}\n\n{results_table(results, 'github')}\n")
        echo(f"wrote {out} and {md}")


def register(app: typer.Typer) -> None:
    app.command("attack-eval")(user_errors(attack_eval))
