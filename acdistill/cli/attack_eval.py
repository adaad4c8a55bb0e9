"""acdistill attack-eval: accuracy of a model under each attack, as JSON, a terminal table and markdown."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tabulate import tabulate

import torch

from acdistill.attacks import EVAL_ATTACKS
from acdistill.checkpoint import load_model, read_sidecar, sidecar_path
from acdistill.cli.common import (DataDirOpt, DeviceOpt, ForceOpt, FormatOpt, NormalizeOpt, ParamsOpt, SetOpt,
                                  check_json_out, completion, device_of, echo, load, parse_normalize,
                                  refuse_overwrite, user_errors, writes)
from acdistill.data import load_split
from acdistill.engine import evaluate
from acdistill.engine.evaluate import check_model_outputs, eps_sweep, first_n
from acdistill.engine.sanity import Check, sanity_checks
from acdistill.engine.trainer import console
from acdistill.errors import AcdistillError
from acdistill.io import claim_outputs, write_json, write_text
from acdistill.models import list_models
from acdistill.plots import eps_sweep_png


# Points of clean accuracy below the checkpoint's own record that signal a wrong setup rather than sampling noise
# (the record comes from a different slice of the test set, of a few hundred images).
CLEAN_DROP_WARNING = 15.0


def open_model(path: Path, arch: str | None, fmt: str | None, normalize: str | None, params,
               device) -> tuple[torch.nn.Module, float | None]:
    """The model (see load_model), and the clean accuracy its sidecar records, if any."""
    net = load_model(path, device, arch=arch, format=fmt, normalize=parse_normalize(normalize),
                     dataset=params.data.dataset if (arch, fmt, normalize) != (None,) * 3 else None)
    recorded = read_sidecar(path).get("info", {}).get("clean_acc") if sidecar_path(path).is_file() else None
    return net, recorded


def results_table(results: dict[str, dict], fmt: str) -> str:
    rows = [[name, f"{r['accuracy']:.2f}", f"{r['worst_class']:.2f}", r["n"], r.get("steps", ""), f"{r['seconds']:.1f}"]
            for name, r in results.items()]
    return tabulate(rows, headers=["attack", "accuracy %", "worst class %", "n", "steps", "seconds"], tablefmt=fmt)


def sanity_table(checks: list[Check], fmt: str) -> str:
    return tabulate([[c.name, "pass" if c.passed else "FAIL", c.detail] for c in checks],
                    headers=["masking check", "result", "measured"], tablefmt=fmt)


def sweep_table(rows: list[dict], fmt: str, norm: str) -> str:
    if norm == "Linf":  # papers write L-inf budgets in 1/255 units
        return tabulate([[f"{r['eps']:.5f}", f"{r['eps'] * 255:.2f}", f"{r['accuracy']:.2f}"] for r in rows],
                        headers=["eps", "eps x 255", "accuracy %"], tablefmt=fmt)
    return tabulate([[f"{r['eps']:.5f}", f"{r['accuracy']:.2f}"] for r in rows], headers=["eps", "accuracy %"],
                    tablefmt=fmt)


def parse_eps_list(text: str) -> list[str]:
    """'0,2/255,8/255' -> its items; params validation turns each into a number (or names the bad one)."""
    return [item.strip() for item in text.split(",") if item.strip()]


class ProgressBars:
    """One rich bar per attack, started on the first batch so that an input error is not preceded by a blank bar."""

    def __init__(self):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True)
        self.tasks: dict[str, int] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.tasks:
            self.bar.start()
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total)
        self.bar.advance(self.tasks[name], done)

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        if self.tasks:
            self.bar.stop()


def attack_eval(
    model: Annotated[Path, typer.Option(help="checkpoint: ours (.safetensors + .json sidecar), or a released state "
                                             "dict (.safetensors / .pt, read with weights_only=True)")],
    arch: Annotated[Optional[str], typer.Option(
        help="architecture of a bare state dict in acdistill's layout (released layouts name their own; see "
             "`acdistill models`)", autocompletion=completion(list_models))] = None,
    fmt: FormatOpt = None,
    normalize: NormalizeOpt = None,
    attacks: Annotated[Optional[str], typer.Option(
        help=f"comma-separated, from: {', '.join(EVAL_ATTACKS.names())} (see `acdistill attacks`)",
        autocompletion=completion(EVAL_ATTACKS.names, comma_separated=True))] = None,
    n: Annotated[Optional[int], typer.Option(help="evaluate the first n test images")] = None,
    eps: Annotated[Optional[str], typer.Option(help="budget, e.g. 8/255 (L-inf) or 0.5 (L2)")] = None,
    norm: Annotated[Optional[str], typer.Option(help="threat model: Linf or L2")] = None,
    steps: Annotated[Optional[int], typer.Option(
        help="iterations of every iterative attack (pgd*, cw*, aa-fast) instead of their SPEC defaults")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="attack batch size")] = None,
    sweep: Annotated[Optional[str], typer.Option(
        help="accuracy-vs-eps curve at these comma-separated eps (e.g. 0,2/255,4/255,8/255,16/255) for the attack "
             "eval.sweep.attack (default pgd20)")] = None,
    sanity: Annotated[bool, typer.Option(
        "--sanity", help="also run the gradient-masking checks (more steps, larger eps, Square, huge eps)")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="JSON to write; a markdown report goes beside it (.md), the sweep as _sweep.json and _sweep.png")] = None,
    force: ForceOpt = False,
    params_file: ParamsOpt = Path("params.yaml"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate a model under attacks on the params' test subset (section `eval`)."""
    attack_list = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    params = load(params_file, set_, **{"eval.attacks": attack_list, "eval.n": n, "eval.eps": eps, "eval.norm": norm,
                                        "eval.steps": steps, "eval.batch_size": batch_size,
                                        "eval.sweep.eps": parse_eps_list(sweep) if sweep is not None else None})
    cfg = params.eval
    if out is not None:
        check_json_out(out)
        refuse_overwrite(force, out)
    budget = cfg.budget()
    if sanity and budget.eps <= 0:
        raise AcdistillError("--sanity needs eps > 0")
    dev = device_of(params, device)
    net, recorded_clean = open_model(model, arch, fmt, normalize, params, dev)
    test = load_split(params.data.dataset, False, params.data.test_subset, params.data.root, data_dir)
    check_model_outputs(net, test, dev)
    common = dict(batch_size=cfg.batch_size, seed=params.seed, device=dev)
    sweep_n = (cfg.sweep.n or cfg.n) if cfg.sweep else None
    s = cfg.sanity
    # Each subset is taken now, so that one larger than the test set is refused before anything is written.
    evaluated, sweep_set = first_n(test, cfg.n), first_n(test, sweep_n) if cfg.sweep else None
    sanity_set = first_n(test, s.n) if sanity else None
    claim_outputs()
    with ProgressBars() as progress:
        results = evaluate(net, evaluated, cfg.attacks, budget=budget, limits=cfg.n_per_attack, progress=progress,
                           **common)
        curve = (eps_sweep(net, sweep_set, cfg.sweep.attack, cfg.sweep.eps, budget=budget, progress=progress,
                           **common) if cfg.sweep else None)
        checks = (sanity_checks(net, sanity_set, budget, steps=s.steps, more_steps_factor=s.more_steps_factor,
                                square_queries=s.square_queries, tolerance=s.tolerance,
                                huge_eps_max_accuracy=s.huge_eps_max_accuracy, progress=progress, **common)
                  if sanity else None)
    threat = f"{cfg.norm} eps {cfg.eps:.5f}" + (f", {cfg.steps} steps" if cfg.steps else "")
    echo(f"{model} on {params.data.dataset} ({threat})")
    clean = results.get("natural", {}).get("accuracy")
    if clean is not None and recorded_clean is not None and clean < recorded_clean - CLEAN_DROP_WARNING:
        typer.echo(f"warning: clean accuracy {clean:.1f} % is far below the {recorded_clean:.1f} % recorded with "
                   f"{model}; a wrong normalization or dataset is the usual cause", err=True)
    echo(results_table(results, "simple"))
    sections = [f"# {model.stem}: attack evaluation\n\nmodel `{model}`, dataset {params.data.dataset}, {threat}, "
                f"seed {params.seed}\n\n{results_table(results, 'github')}\n"]
    if curve:
        echo(f"\n{cfg.sweep.attack} against eps (first {sweep_n} test images)\n"
             f"{sweep_table(curve, 'simple', cfg.norm)}")
        sections.append(f"## {cfg.sweep.attack} against eps (first {sweep_n} test images)\n\n"
                        f"{sweep_table(curve, 'github', cfg.norm)}\n")
    if checks:
        failed = [c.name for c in checks if not c.passed]
        echo(f"\ngradient-masking checks (first {len(sanity_set)} test images, all attacked)\n"
             f"{sanity_table(checks, 'simple')}")
        if failed:
            typer.echo(f"warning: masking checks failed ({', '.join(failed)}): the robust accuracy above is likely "
                       f"overestimated; evaluate with stronger or adaptive attacks", err=True)
        sections.append(f"## Gradient-masking checks\n\n{sanity_table(checks, 'github')}\n")
    if out is not None:
        report = dict(results)
        if checks:
            report["sanity"] = {c.name: c.as_dict() for c in checks}
        written = [out, out.with_suffix(".md")]
        write_json(out, report)
        write_text(written[1], "\n".join(sections))
        if curve:
            data_path, png = out.with_name(f"{out.stem}_sweep.json"), out.with_name(f"{out.stem}_sweep.png")
            write_json(data_path, curve)
            eps_sweep_png({model.stem: curve}, png, title=f"{model.stem}: {cfg.sweep.attack}, first {sweep_n} images",
                          attack=cfg.sweep.attack, norm=cfg.norm)
            written += [data_path, png]
        echo("wrote " + ", ".join(str(w) for w in written))


def register(app: typer.Typer) -> None:
    app.command("attack-eval")(user_errors(writes("out")(attack_eval)))
