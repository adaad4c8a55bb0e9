"""acdistill report: one markdown page across the finished runs of a workspace.

A run is a checkpoint with our sidecar under models/ (its stage, method, epochs, minutes and teacher come from the
sidecar); its accuracies come from metrics/eval_<name>.json when attack-eval has run on it. Ablation points,
the linear probe and the figures are added when their files exist; with --experiments, the evaluations of every
commit and `dvc exp` experiment too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tabulate import tabulate

from acdistill.checkpoint import FORMAT
from acdistill.config import Params, dotted_items
from acdistill.errors import AcdistillError
from acdistill.io import write_text
from acdistill.pipeline.common import TRAINING_STAGES, details_path, echo, writes
from acdistill.pipeline.compare import (
    Measured,
    attacks_of,
    comparisons_table,
    markdown_table,
    ties_text,
    ties_with_best,
)
from acdistill.pipeline.evaluation import interval_text, per_image_path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise AcdistillError(f"{path}: not valid JSON ({e})") from None


def collect_runs(models: Path, metrics: Path) -> list[dict[str, Any]]:
    """One record per checkpoint under `models`: sidecar facts plus its evaluation, with each attack's per-image
    results where attack-eval kept them (metrics/eval_<name>_per_image.json)."""
    sidecars = {p: read_json(p) for p in sorted(models.glob("*.json")) if p.with_suffix(".safetensors").is_file()}
    sidecars = {p: s for p, s in sidecars.items() if isinstance(s, dict) and s.get("format") == FORMAT}
    by_sha = {s["sha256"]: p.stem for p, s in sidecars.items()}
    runs = []
    for path, side in sidecars.items():
        info = side.get("info", {})
        source = info.get("student_sha256") or info.get("teacher_sha256")
        eval_path = metrics / f"eval_{path.stem}.json"
        evaluation = read_json(eval_path) if eval_path.is_file() else {}
        per_image = read_json(per_image_path(eval_path)) if per_image_path(eval_path).is_file() else {}
        attacks = attacks_of(evaluation)
        runs.append(
            {
                "name": path.stem + (" (held-out training images)" if evaluation.get("split") == "val" else ""),
                "arch": side["arch"],
                "stage": info.get("stage", "-"),
                "method": info.get("method", "-"),
                "epochs": info.get("epochs", "-"),
                "from": by_sha.get(source, "(not in this workspace)") if source else "-",
                "minutes": info.get("minutes_this_run", "-"),
                "accuracy": {k: evaluation[k]["accuracy"] for k in attacks},
                "ci95": {k: evaluation[k].get("ci95") for k in attacks},
                "measured": {k: Measured.of([per_image[k]]) if k in per_image else None for k in attacks},
            }
        )
    rank = {stage: i for i, stage in enumerate(TRAINING_STAGES)}
    return sorted(runs, key=lambda r: (rank.get(r["stage"], len(rank)), r["name"]))


def runs_table(runs: list[dict[str, Any]]) -> str:
    attacks = list(dict.fromkeys(a for r in runs for a in r["accuracy"]))
    headers = ["run", "stage", "arch", "method", "distilled / tuned from", "epochs", "train min"] + [
        f"{a} % (95 % interval)" for a in attacks
    ]
    rows = [
        [r["name"], r["stage"], r["arch"], r["method"], r["from"], r["epochs"], r["minutes"]]
        + [accuracy_cell(r, a) for a in attacks]
        for r in runs
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def runs_ties(runs: list[dict[str, Any]]) -> str:
    """Per attack, the best run and the runs within noise of it (paired over the images both saw)."""
    evaluated = [r for r in runs if r["measured"]]
    ties = ties_with_best(
        [r["name"] for r in evaluated],
        [{a: m for a, m in r["measured"].items() if m is not None} for r in evaluated],
    )
    return ties_text(ties)


def experiment_rows(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from `dvc exp show --json`: per commit or experiment, per evaluated model (metrics/eval_<name>.json),
    with the params it changed (an experiment against its commit, the workspace against HEAD)."""
    defaults = Params()
    entries = []  # (label, rev, data, the params it is compared with)
    head = next((c.get("data") for c in shown if c["rev"] != "workspace"), None)
    for commit in shown:
        rev = commit["rev"]
        label = commit.get("name") or (rev if rev == "workspace" else rev[:7])
        entries.append((label, rev, commit.get("data"), head if rev == "workspace" else None))
        for exp in commit.get("experiments") or []:
            entries += [
                (exp.get("name") or run["rev"][:7], run["rev"], run.get("data"), commit.get("data"))
                for run in exp.get("revs", [])
            ]
    rows = []
    for label, rev, data, compared_with in entries:
        if not data:
            continue
        params = params_of(data)
        changed = changed_params(params, params_of(compared_with)) if compared_with else "-"
        methods = {
            "teacher": params.get("teacher", {}).get("train", {}).get("method", defaults.teacher.train.method),
            "student": params.get("distill", {}).get("method", defaults.distill.method),
            "student_aft": params.get("aft", {}).get("method", defaults.aft.method),
        }
        for path, metric in sorted((data.get("metrics") or {}).items()):
            name = Path(path).stem.removeprefix("eval_")
            if not Path(path).stem.startswith("eval_") or name.endswith("_sweep"):
                continue
            results = metric.get("data") or {}
            # DVC leaves lists out of its metrics, the intervals among them: they are read from the file itself
            whole = metrics_file_at(rev, path) or {}
            rows.append(
                {
                    "experiment": label,
                    "changed": changed,
                    "model": name,
                    "method": methods.get(name, "-"),
                    "accuracy": {k: results[k]["accuracy"] for k in attacks_of(results)},
                    "ci95": {k: (whole.get(k) or {}).get("ci95") for k in attacks_of(results)},
                }
            )
    return rows


def params_of(data: dict[str, Any] | None) -> dict[str, Any]:
    return ((data or {}).get("params") or {}).get("params.yaml", {}).get("data", {})


def changed_params(params: dict[str, Any], base: dict[str, Any]) -> str:
    """The dotted keys whose values differ, as `-S` would set them: "distill.method=kd, eval.n=500"."""
    flat, flat_base = dotted_items(params), dotted_items(base)
    keys = sorted(k for k in flat.keys() | flat_base.keys() if flat.get(k) != flat_base.get(k))
    return ", ".join(f"{k}={value_text(flat[k]) if k in flat else '(unset)'}" for k in keys) or "(none)"


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def metrics_file_at(rev: str, path: str) -> dict[str, Any] | None:
    """A metrics file as committed in `rev` (a commit or an experiment's ref), or in the workspace; None where it
    cannot be read."""
    try:
        if rev == "workspace":
            return json.loads(Path(path).read_text())
        done = subprocess.run(["git", "show", f"{rev}:./{path}"], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def accuracy_cell(run: dict[str, Any], attack: str) -> str:
    if attack not in run["accuracy"]:
        return "-"
    ci = run["ci95"].get(attack)
    return f"{run['accuracy'][attack]:.1f}" + (f" ({interval_text(ci)})" if ci else "")


def experiments_table(rows: list[dict[str, Any]]) -> str:
    attacks = list(dict.fromkeys(a for r in rows for a in r["accuracy"]))
    return tabulate(
        [
            [r["experiment"], r["model"], r["method"], r["changed"]] + [accuracy_cell(r, a) for a in attacks]
            for r in rows
        ],
        headers=["experiment", "model", "method", "params changed"] + [f"{a} % (95 % interval)" for a in attacks],
        tablefmt="github",
        disable_numparse=True,
    )


def dvc_experiments() -> list[dict[str, Any]]:
    try:
        done = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AcdistillError(f"--experiments: could not run `dvc exp show --json` ({e})") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise AcdistillError(f"--experiments: `dvc exp show --json` failed: {first}")
    return json.loads(done.stdout)


def link(target: Path, page: Path) -> str:
    return os.path.relpath(target.resolve(), page.resolve().parent)


def ablation_and_probe(metrics: Path) -> list[str]:
    """The report's sections of the ablation and of the linear probe, from their details in `metrics`, where they
    ran."""
    parts = []
    ablation = details_path(metrics / "ablate.json")
    if ablation.is_file():
        result = read_json(ablation)
        points = result.get("points", [])
        parts.append(f"## Ablation ({len(points)} points, `{ablation}`)\n\n{markdown_table(points, 'github')}\n")
        if result.get("within_noise_of_best"):
            parts.append(ties_text(result["within_noise_of_best"]) + "\n")
        if result.get("comparisons"):
            parts.append(comparisons_table(result["comparisons"], "github") + "\n")
    probe = details_path(metrics / "probe.json")
    if probe.is_file():
        p = read_json(probe)
        rows = [[k, r["accuracy"], r["worst_class"], r["n"]] for k, r in p.items() if isinstance(r, dict)]
        parts.append(
            f"## Linear probe: `{p['model']}` features on {p['dataset']} ({p['train_images']} train "
            f"images)\n\n"
            + tabulate(rows, headers=["attack", "accuracy %", "worst class %", "n"], tablefmt="github")
            + "\n"
        )
    return parts


@writes("out")
def report(
    *,
    models: Path = Path("models"),
    metrics: Path = Path("metrics"),
    figures: Path = Path("figures"),
    out: Path = Path("report.md"),
    experiments: bool = False,
) -> Path:
    """Write one markdown page: every run (teacher, students; method, time, accuracy per attack), the ablation,
    the linear probe, links to the figures, and with `experiments` every commit and `dvc exp` experiment."""
    models, metrics, figures = Path(models), Path(metrics), Path(figures)
    if out.suffix != ".md":
        raise AcdistillError(f"--out {out}: the report is a markdown (.md) file")
    if not models.is_dir():
        raise AcdistillError(f"no runs: {models} is not a directory (run `dvc repro` or a training command first)")
    runs = collect_runs(models, metrics)
    if not runs:
        raise AcdistillError(f"no runs: {models} holds no acdistill checkpoint (.safetensors + .json sidecar)")
    exp_rows = experiment_rows(dvc_experiments()) if experiments else []
    ties = runs_ties(runs)
    parts = [
        f"# acdistill report\n\n{len(runs)} runs in `{models}`; accuracies in % from `{metrics}/eval_*.json` "
        f"('-' where a model was not evaluated), each with its 95 % interval over the test images (Wilson).\n\n"
        f"{runs_table(runs)}\n"
        + (
            "\nA difference is within noise when its 95 % interval contains 0 (paired where both runs saw the same "
            "images, else over each run's own):"
            f"\n\n{ties}\n"
            if ties
            else ""
        )
    ]
    parts += ablation_and_probe(metrics)
    if exp_rows:
        parts.append(f"## Commits and experiments (`dvc exp show`)\n\n{experiments_table(exp_rows)}\n")
    pngs = sorted(figures.glob("*.png")) + sorted(metrics.glob("*.png"))
    if pngs:
        parts.append("## Figures\n\n" + "\n".join(f"- [{p.name}]({link(p, out)})" for p in pngs) + "\n")
    write_text(out, "\n".join(parts))
    shown = [f"{len(runs)} runs"]
    if experiments:
        shown.append(f"{len({r['experiment'] for r in exp_rows})} commits and experiments")
    echo(f"wrote {out}: {', '.join(shown + ([f'{len(pngs)} figures'] if pngs else []))}")

    return out
