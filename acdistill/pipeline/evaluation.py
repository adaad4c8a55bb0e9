"""The evaluation stage: a checkpoint's accuracy under each attack of the `eval` section, with an accuracy-vs-eps
sweep and gradient-masking checks on request, as a table, JSON and markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from acdistill import progress
from acdistill.budgets import eps_text
from acdistill.checkpoint import load_model, read_sidecar, sidecar_path
from acdistill.config import Params
from acdistill.data import ImageSet
from acdistill.engine import evaluate
from acdistill.engine.evaluate import check_model_outputs, eps_sweep, first_n
from acdistill.engine.sanity import Check, sanity_checks
from acdistill.errors import AcdistillError, warn
from acdistill.formats import Normalize
from acdistill.io import claim_outputs, json_text, write_files, write_json
from acdistill.pipeline.common import (
    accuracy_metrics,
    check_data,
    check_json_out,
    check_trained_on,
    details_path,
    device_of,
    echo,
    evaluation_split,
    refuse_overwrite,
    writes,
)
from acdistill.plots import eps_sweep_png
from acdistill.progress import Callback

# Points of clean accuracy below the checkpoint's own record that signal a wrong setup rather than sampling noise
# (the record comes from a different slice of the test set, of a few hundred images).
CLEAN_DROP_WARNING = 15.0


def open_model(
    path: Path, arch: str | None, fmt: str | None, normalize: Normalize, params: Params, device: torch.device
) -> tuple[torch.nn.Module, float | None]:
    """The model (see load_model), and the clean accuracy its sidecar records, if any."""
    check_trained_on(path, params, "model", params.eval.cross_dataset, "eval.cross_dataset")
    net = load_model(
        path,
        device,
        arch=arch,
        format=fmt,
        normalize=normalize,
        dataset=params.data.dataset if (arch, fmt, normalize) != (None,) * 3 else None,
    )
    recorded = read_sidecar(path).get("info", {}).get("clean_acc") if sidecar_path(path).is_file() else None
    return net, recorded


# What each attack's result holds per image: kept beside the metrics (<out>_per_image.json), not in them, so that
# `dvc metrics show` keeps to the accuracies; report and ablate read it for paired comparisons.
PER_IMAGE = ("images", "correct")


def interval_text(ci95: list[float] | None) -> str:
    return f"{ci95[0]:.1f}–{ci95[1]:.1f}" if ci95 else ""


def results_table(results: dict[str, dict], fmt: str) -> str:
    rows = [
        [
            name,
            f"{r['accuracy']:.2f}",
            interval_text(r.get("ci95")),
            f"{r['worst_class']:.2f}",
            r["n"],
            r.get("steps", ""),
            f"{r['seconds']:.1f}",
        ]
        for name, r in results.items()
    ]
    headers = ["attack", "accuracy %", "95 % interval", "worst class %", "n", "steps", "seconds"]
    return tabulate(rows, headers=headers, tablefmt=fmt)


def split_per_image(results: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """(the results without their per-image fields, {attack: {n, images, correct}})."""
    metrics = {name: {k: v for k, v in r.items() if k not in PER_IMAGE} for name, r in results.items()}
    per_image = {name: {"n": r["n"], **{k: r[k] for k in PER_IMAGE}} for name, r in results.items()}
    return metrics, per_image


def per_image_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_per_image.json")


def sanity_table(checks: list[Check], fmt: str) -> str:
    return tabulate(
        [[c.name, "pass" if c.passed else "FAIL", c.detail] for c in checks],
        headers=["masking check", "result", "measured"],
        tablefmt=fmt,
    )


def sweep_table(rows: list[dict], fmt: str, norm: str) -> str:
    return tabulate(
        [[eps_text(r["eps"], norm), f"{r['accuracy']:.2f}"] for r in rows],
        headers=["eps", "accuracy %"],
        tablefmt=fmt,
        disable_numparse=True,  # keeps 8/255 as written
    )


def report_of(
    results: dict[str, dict], checks: list[Check] | None, curve: list[dict] | None, split: str = "test"
) -> dict[str, Any]:
    """The JSON an evaluation writes: {attack: result without its per-image fields}, plus the masking checks'
    outcomes and the sweep."""
    report: dict[str, Any] = split_per_image(results)[0]
    if split == "val":  # a result on held-out training images says so: report and dvc read it beside test results
        report["split"] = split
    if checks:
        report["sanity"] = {c.name: c.as_dict() for c in checks}
    if curve is not None:
        report["sweep"] = curve
    return report


def attack_results(
    net: torch.nn.Module, data: ImageSet, params: Params, device: torch.device, on_batch: Callback
) -> dict[str, dict]:
    """The eval section's attacks on the first eval.n images of `data`, as `acdistill.evaluate` returns them, each
    batch reported to `on_batch`: what attack-eval and each ablate run measure."""
    e = params.eval
    return evaluate(
        net,
        data,
        e.attacks,
        budget=e.budget(),
        batch_size=e.batch_size,
        n=e.n,
        limits=e.n_per_attack,
        seed=params.seed,
        device=device,
        progress=on_batch,
    )


@dataclass(frozen=True)
class Evaluated:
    """What evaluate_checkpoint measured: each attack's results (`attack_results`), the accuracy-vs-eps curve
    ({eps, accuracy} per eps, on the first `sweep_n` images) and the gradient-masking checks (on the first
    `sanity_n`), each None when it did not run; `recorded_clean`, the clean accuracy (%) the sidecar records."""

    results: dict[str, dict]
    curve: list[dict] | None
    checks: list[Check] | None
    recorded_clean: float | None
    sweep_n: int | None
    sanity_n: int | None


def measure_checkpoint(
    params: Params,
    model: Path,
    *,
    arch: str | None,
    format: str | None,
    normalize: Normalize,
    sanity: bool,
    data_dir: Path | None,
    device: str | torch.device | None,
) -> Evaluated:
    """evaluate_checkpoint's measurements: every input is checked (AcdistillError), the outputs claimed, then the
    model evaluated, swept and checked."""
    cfg = params.eval
    budget = cfg.budget()
    if sanity and budget.eps <= 0:
        raise AcdistillError("--sanity needs eps > 0")
    check_data(params, data_dir, "eval")
    dev = device_of(params, device)
    net, recorded_clean = open_model(model, arch, format, normalize, params, dev)
    test = evaluation_split(params, data_dir)
    check_model_outputs(net, test, dev)
    common = dict(batch_size=cfg.batch_size, seed=params.seed, device=dev)
    sweep_n = (cfg.sweep.n or cfg.n) if cfg.sweep else None
    s = cfg.sanity
    # Each subset is taken now, so that one larger than the test set is refused before anything is written.
    evaluated, sweep_set = first_n(test, cfg.n), first_n(test, sweep_n) if cfg.sweep else None
    sanity_set = first_n(test, s.n) if sanity else None
    claim_outputs()
    with progress.callback() as on_batch:
        results = attack_results(net, evaluated, params, dev, on_batch)
        curve = (
            eps_sweep(net, sweep_set, cfg.sweep.attack, cfg.sweep.eps, budget=budget, progress=on_batch, **common)
            if cfg.sweep
            else None
        )
        # the sanity section holds sanity_checks' settings, and n: which images
        checks = (
            sanity_checks(net, sanity_set, budget, progress=on_batch, **s.model_dump(exclude={"n"}), **common)
            if sanity
            else None
        )
    return Evaluated(results, curve, checks, recorded_clean, sweep_n, len(sanity_set) if sanity else None)


def show_evaluation(params: Params, model: Path, measured: Evaluated) -> str:
    """Print the evaluation's tables (warning of a clean accuracy far below the record, and of failed masking
    checks); returns them as the markdown report."""
    cfg = params.eval
    results, curve, checks = measured.results, measured.curve, measured.checks
    threat = f"{cfg.norm} eps {eps_text(cfg.eps, cfg.norm)}" + (f", {cfg.steps} steps" if cfg.steps else "")
    if cfg.split == "val":
        threat += f"; held-out training images {params.data.val_subset}, not test images"
    echo(f"{model} on {params.data.dataset} ({threat})")
    clean, recorded_clean = results.get("natural", {}).get("accuracy"), measured.recorded_clean
    if clean is not None and recorded_clean is not None and clean < recorded_clean - CLEAN_DROP_WARNING:
        warn(
            f"clean accuracy {clean:.1f} % is far below the {recorded_clean:.1f} % recorded with {model}; a wrong "
            "normalization or dataset is the usual cause"
        )
    echo(results_table(results, "simple"))
    sections = [
        f"# {model.stem}: attack evaluation\n\nmodel `{model}`, dataset {params.data.dataset}, {threat}, "
        f"seed {params.seed}\n\n{results_table(results, 'github')}\n"
    ]
    if curve:
        sweep = f"{cfg.sweep.attack} against eps (first {measured.sweep_n} test images)"
        echo(f"\n{sweep}\n{sweep_table(curve, 'simple', cfg.norm)}")
        sections.append(f"## {sweep}\n\n{sweep_table(curve, 'github', cfg.norm)}\n")
    if checks:
        failed = [c.name for c in checks if not c.passed]
        echo(
            f"\ngradient-masking checks (first {measured.sanity_n} test images, all attacked)\n"
            f"{sanity_table(checks, 'simple')}"
        )
        if failed:
            warn(
                f"masking checks failed ({', '.join(failed)}): the robust accuracy above is likely overestimated; "
                "evaluate with stronger or adaptive attacks"
            )
        sections.append(f"## Gradient-masking checks\n\n{sanity_table(checks, 'github')}\n")
    return "\n".join(sections)


def write_evaluation(params: Params, model: Path, measured: Evaluated, markdown: str, out: Path) -> None:
    """Write `out` and its siblings (see evaluate_checkpoint) and name them."""
    cfg, results, curve = params.eval, measured.results, measured.curve
    written = [out, details_path(out), out.with_suffix(".md"), per_image_path(out)]
    write_files(
        {
            out: json_text(accuracy_metrics(results) | ({"split": cfg.split} if cfg.split == "val" else {})),
            written[1]: json_text(report_of(results, measured.checks, None, cfg.split)),
            written[2]: markdown,
            written[3]: json_text(split_per_image(results)[1]),
        }
    )
    if curve:
        data_path, png = out.with_name(f"{out.stem}_sweep.json"), out.with_name(f"{out.stem}_sweep.png")
        write_json(data_path, curve)
        eps_sweep_png(
            {model.stem: curve},
            png,
            title=f"{model.stem}: {cfg.sweep.attack}, first {measured.sweep_n} images",
            attack=cfg.sweep.attack,
            norm=cfg.norm,
        )
        written += [data_path, png]
    echo("wrote " + ", ".join(str(w) for w in written))


@writes("out")
def evaluate_checkpoint(
    params: Params,
    *,
    model: Path,
    out: Path | None = None,
    arch: str | None = None,
    format: str | None = None,
    normalize: Normalize = None,
    sanity: bool = False,
    force: bool = False,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate the model at `model` (an acdistill checkpoint, or a state dict with arch / format / normalize as
    `acdistill.load_model` takes them) under the `eval` section's attacks on the test subset of `params.data`.

    With `eval.sweep`, also an accuracy-vs-eps curve; with `sanity`, the gradient-masking checks of
    acdistill.engine.sanity. Prints the tables; with `out` (.json), writes there each attack's accuracy and interval
    (what `dvc metrics` compares), beside it the rest as <out>_details.json, a markdown report, each attack's
    per-image results as <out>_per_image.json, and the sweep as <out>_sweep.json and .png. Returns
    {attack: {accuracy, ci95, per_class, worst_class, n, seconds, steps, images, correct}}, plus "sanity" and
    "sweep" when they ran."""
    model = Path(model)
    if out is not None:
        check_json_out(out)
        refuse_overwrite(force, out)
    measured = measure_checkpoint(
        params, model, arch=arch, format=format, normalize=normalize, sanity=sanity, data_dir=data_dir, device=device
    )
    markdown = show_evaluation(params, model, measured)
    if out is not None:
        write_evaluation(params, model, measured, markdown, out)
    report = report_of(measured.results, measured.checks, measured.curve, params.eval.split)
    report.update(measured.results)  # the caller gets the per-image results too
    return report
