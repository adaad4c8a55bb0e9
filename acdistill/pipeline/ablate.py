"""acdistill ablate: distill and evaluate one student per point of a parameter grid (or a list of points), then
tabulate them with 95 % intervals. A point with `adv_finetune: true` fine-tunes the distilled student of the same
point without it. With `seeds`, every point runs once per seed, and the table gives each accuracy's mean with its
interval over seeds and images (acdistill.stats); `compare` names pairs of points whose differences it tests.

Each point trains in its own directory, ablate/<point>-<hash>/, named by the hash of everything that decides the
trained student (its validated params but the evaluation's, and the teacher's sha256): result.json records the
training, and each evaluation of it is one eval-<hash>.json, named by the hash of the `eval` and `data` sections
and the seed. A trained point is reused as long as its hash matches, and evaluated anew only when the evaluation
changes: widening a grid runs only the new points, an interrupted ablation resumes mid-point from the epoch state,
and these small files alone (without the weights, as a git clone holds them) let a rerun reuse every finished point.
The DVC stage keeps ablate/ with `persist: true` for the same reason. The hashes leave out the code, so that editing
a docstring does not retrain a study; instead each result records the acdistill code that produced it, and a run
reused from other code that computes results (provenance.COMPUTES) is named in
the output, to be deleted and rerun where the change matters.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import torch

from acdistill.config import FINETUNE, NAME, SEARCH_BY, Params
from acdistill.errors import AcdistillError, warn
from acdistill.io import claim_outputs, json_text, write_files
from acdistill.methods import METHODS
from acdistill.pipeline.common import (
    TEACHER_CHECKPOINT,
    check_data,
    check_json_out,
    details_path,
    device_of,
    echo,
    teacher_sha256,
    writes,
)
from acdistill.pipeline.compare import (
    Measured,
    comparisons,
    comparisons_table,
    descending,
    difference,
    markdown_table,
    measured_points,
    over_seeds_rows,
    row_of,
    search_table,
    ties_text,
    ties_with_best,
)
from acdistill.pipeline.points import (
    distilled_point,
    expand,
    link_latest,
    point_label,
    point_params,
    results_digest,
    with_seeds,
    without_effect,
)
from acdistill.pipeline.runs import Runs
from acdistill.provenance import code_info


def searched(
    runs: Runs, points: list[dict[str, Any]], first_seed: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ablate.search: each point with its chosen value of search.key set (points that set the key keep theirs), and
    one record per searched point ({point, by, values: [{value, accuracy, ci95}], chosen}). A fine-tuning point takes
    the value chosen for its distilled point. A trial of a named point is named <name>.<key's last part>=<value>."""
    search = runs.params.ablate.search
    if search is None:
        return points, []
    short = search.key.rsplit(".", 1)[-1]

    def base_of(point: dict[str, Any]) -> str:  # the distilled point, which fine-tuning points share
        return point_label({k: v for k, v in distilled_point(point).items() if k != SEARCH_BY})

    todo: dict[str, dict[str, Any]] = {}  # base -> the point's label, its attack, its trials (one per value)
    for point in points:
        if search.key in point or base_of(point) in todo:
            continue
        by = point.get(SEARCH_BY, search.by)
        held_out = {"eval.split": "val", "eval.attacks": search.attacks_for(by), "eval.n": None}
        held_out |= {"eval.n_per_attack": {}} | ({"seed": first_seed} if first_seed is not None else {})
        trials = []
        for value in search.values:
            trial = {k: v for k, v in distilled_point(point).items() if k != SEARCH_BY} | {search.key: value}
            named = {NAME: f"{point[NAME]}.{short}={value}"} if NAME in point else {}
            trials.append(named | trial | held_out)
        todo[base_of(point)] = {"label": point.get(NAME, base_of(point)), "by": by, "trials": trials}
    trials = [t for entry in todo.values() for t in entry["trials"]]
    found = iter(runs.run_all(trials, [point_params(runs.params, t) for t in trials], "search run"))
    records, chosen = [], {}
    for base, entry in todo.items():
        tried, measured = [], []
        for value, (_, _, evaluation) in zip(search.values, found):
            r = evaluation["eval"][entry["by"]]
            tried.append({"value": value, "accuracy": r["accuracy"], "ci95": r.get("ci95")})
            measured.append(Measured.of([r]))
        best = max(range(len(tried)), key=lambda i: tried[i]["accuracy"])  # the first of equals: search.values' order
        ties = [
            tried[i]["value"]
            for i in range(len(tried))
            if i != best
            and None not in (measured[i], measured[best])
            and difference(measured[i], measured[best]).within_noise
        ]
        chosen[base] = tried[best]["value"]
        records.append(
            {"point": entry["label"], "by": entry["by"], "values": tried, "chosen": tried[best]["value"]}
            | {"within_noise": ties}
        )
    return [
        point if search.key in point else {**point, search.key: chosen[base_of(point)]} for point in points
    ], records


def check_effect(params: Params, points: list[dict[str, Any]]) -> None:
    """Warn of each grid or points key a point's run does not read (`without_effect`), or with ablate.strict
    refuse, before anything runs: points that differ only in such keys are one run under several labels."""
    unread: dict[str, list[str]] = {}
    for point in points:
        p = point_params(params, point)
        for key in without_effect(point, p):
            section = key.partition(".")[0]
            reader = p.distill.method if section == "distill" else p.aft.method
            why = f"has no effect on {reader}" if section == "distill" or point.get(FINETUNE) else "has no effect"
            if section == "aft" and not point.get(FINETUNE):
                why += f" without {FINETUNE}: true"
            unread.setdefault(f"{key} {why}", []).append(point_label(point))
    if not unread:
        return
    message = "; ".join(f"{what} (points {', '.join(labels)})" for what, labels in unread.items())
    if params.ablate.strict:
        raise AcdistillError(f"ablate: {message} (ablate.strict / --strict refuses it)")
    warn(f"ablate: {message}; points that differ only there train one student (--strict refuses this)")


@writes("out", "runs")
def ablate(
    params: Params,
    *,
    teacher: Path = TEACHER_CHECKPOINT,
    runs: Path = Path("ablate"),
    out: Path = Path("metrics/ablate.json"),
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Distill and evaluate a student at every point of `params.ablate`'s grid, then at each explicit point (those
    of ablate.only): the params, then ablate.fixed, then the point's values; with ablate.search, first the search
    for each point's setting; with ablate.seeds, once per seed. Each run lives in its own directory under `runs`;
    finished runs are reused. Writes `out` (.json, the accuracies), its details and its markdown table; returns
    the table's rows ("points"), the runs of each seed ("runs"), the search ("search"), the comparisons and the
    labels of runs reused from other code."""
    cfg = params.ablate
    if cfg.only is None:
        points = expand(cfg.grid) + cfg.points
    else:  # the named points alone, in their order in the params
        points = [p for p in cfg.points if p.get(NAME) in cfg.only]
    if not points:
        raise AcdistillError("ablate: no points; set ablate.grid or ablate.points in params, or pass --grid KEY=V1,V2")
    if cfg.search is not None and params.data.val_subset is None:
        raise AcdistillError("ablate.search chooses on held-out images: set data.val_subset (e.g. 10000:11000)")
    check_effect(params, points)
    first_seed = cfg.seeds[0] if cfg.seeds else None
    # every run validated before any starts, the search's with each of its values
    per_run = [point_params(params, p) for p in with_seeds(points, cfg.seeds)]
    trials = [
        {**point, cfg.search.key: value, "eval.split": "val"}
        for point in (points if cfg.search is not None else [])
        for value in cfg.search.values
    ]
    for point, p in [*zip(with_seeds(points, cfg.seeds), per_run), *((t, point_params(params, t)) for t in trials)]:
        try:
            check_data(p, data_dir, "train")
            check_data(p, data_dir, "eval")
        except AcdistillError as e:
            raise AcdistillError(f"ablate point {point_label(point)}: {e}") from None
    columns = (
        {k for p in points for k in p} | {"train_minutes", "all_attacks"} | {a for p in per_run for a in p.eval.attacks}
    )
    if cfg.sort_by is not None and cfg.sort_by not in columns:
        raise AcdistillError(f"ablate: cannot sort by '{cfg.sort_by}'; columns: {', '.join(sorted(columns))}")
    check_json_out(out)
    if cfg.cluster == "slurm" and shutil.which("srun") is None:
        raise AcdistillError(
            "ablate.cluster: slurm, but this machine has no Slurm (no srun on PATH); run it on the cluster's login "
            "node, or use cluster: local"
        )
    # submitit is imported by the functions that run jobs only: a machine without it runs points one at a time
    if (cfg.jobs > 1 or cfg.cluster == "slurm") and importlib.util.find_spec("submitit") is None:
        raise AcdistillError(
            "ablate.jobs > 1 and ablate.cluster: slurm run points through submitit, which is not installed: "
            "pip install 'acdistill[jobs]' (or run the points one at a time, jobs: 1)"
        )
    dev = device_of(params, device)
    needs_teacher = any(METHODS.get(p.distill.method).needs_teacher for p in per_run)
    teacher_sha = teacher_sha256(teacher, params) if needs_teacher else None
    claim_outputs()

    ablation = Runs(params, runs, teacher, teacher_sha, data_dir, dev)
    points, search = searched(ablation, points, first_seed)
    runs_to_do = with_seeds(points, cfg.seeds)
    per_run = [point_params(params, p) for p in runs_to_do]
    results = ablation.run_all(runs_to_do, per_run, "run" if cfg.seeds else "point")
    for point, (run, _, _) in zip(runs_to_do, results):
        if NAME in point and point.get("seed", first_seed) == first_seed:  # with seeds: the first seed's run
            link_latest(runs / point[NAME], run)
    rows = [row_of(point, result, evaluation, run) for point, (run, result, evaluation) in zip(runs_to_do, results)]
    evaluations = [evaluation for _, _, evaluation in results]
    table = over_seeds_rows(points, rows, evaluations) if cfg.seeds else rows
    per_point = len(rows) // len(points)
    measured = measured_points(
        [[e["eval"] for e in evaluations[i : i + per_point]] for i in range(0, len(rows), per_point)]
    )
    ties = ties_with_best([point_label(p) for p in points], measured)
    names = [p.get(NAME, "") for p in points]
    pairs = [tuple(pair) for pair in cfg.compare if set(pair) <= set(names)]  # with ablate.only, those it runs
    compared = comparisons(pairs, names, measured)
    attacks = [*dict.fromkeys(a for p in per_run for a in p.eval.attacks), "all_attacks"]
    accuracies = {
        point_label(point): {a: {"accuracy": row[a], "ci95": row.get(f"{a}_ci95")} for a in attacks if a in row}
        for point, row in zip(points, table)
    }
    if cfg.sort_by is not None:
        table.sort(key=lambda r: descending(r.get(cfg.sort_by)))
    stale = ablation.stale
    write_outputs(params, out, teacher, accuracies, table, rows, search, ties, compared, stale, per_run)
    return {
        "points": table,
        **({"runs": rows} if cfg.seeds else {}),
        "search": search,
        "comparisons": compared,
        "reused_from_other_code": stale,
    }


def write_outputs(
    params: Params,
    out: Path,
    teacher: Path,
    accuracies: dict[str, dict[str, Any]],
    table: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    search: list[dict[str, Any]],
    ties: dict[str, dict[str, Any]],
    compared: list[dict[str, Any]],
    stale: list[str],
    per_run: list[Params],
) -> None:
    """ablate's metrics (`out`: each point's accuracy and interval per attack), its details (<out>_details.json:
    the table's rows, the runs, the search, the comparisons), its markdown table (.md) and its terminal table."""
    cfg = params.ablate
    split = {p.eval.split for p in per_run}
    images = "held-out training images (data.val_subset)" if split == {"val"} else "test images"
    order = f", sorted by {cfg.sort_by}, descending" if cfg.sort_by else ""
    students = (
        f"{len(cfg.seeds)} students per point, one per seed: each accuracy (%, on the {images}) is their mean with "
        "its 95 % interval over seeds and images; other columns are mean ± sample standard deviation"
        if cfg.seeds
        else f"One student per point: each accuracy (%, on the {images}) with its 95 % interval over them (Wilson)"
    )
    stale_note = (
        f"Trained by other acdistill code than this table's (source {results_digest()}), and reused: "
        f"{', '.join(stale)}. Delete a run's directory to retrain it."
        if stale
        else ""
    )
    if search:
        echo(search_table(search, cfg.search.key, "simple"))
    echo(markdown_table(table, "simple"))
    echo(ties_text(ties))
    if compared:
        echo(comparisons_table(compared, "simple"))
    details = json_text(
        {
            "grid": cfg.grid,
            "explicit_points": cfg.points,
            "fixed": cfg.fixed,
            "teacher": str(teacher),
            "evaluated_on": sorted(split),
            "points": table,
            **({"seeds": cfg.seeds, "runs": rows} if cfg.seeds else {}),
            "search": search,
            "within_noise_of_best": ties,
            "comparisons": compared,
            "code": code_info(),
            "reused_from_other_code": stale,
        }
    )
    sections = ["# Ablation\n"]
    if search:
        s = cfg.search
        sections.append(
            f"## Search: {s.key} on the held-out training images (data.val_subset {params.data.val_subset})\n\n"
            f"Each point's {s.key} is the value with the highest accuracy under its `by` attack on all of these images "
            f"(with its 95 % interval), trained at the first seed; of equal accuracies the first value wins. The "
            f"last column names the other values within noise of the chosen one (paired over the images). The table "
            f"below runs the chosen value.\n\n"
            f"{search_table(search, s.key, 'github')}\n"
        )
    sections += [
        f"{students}{order}. Fixed settings: {cfg.fixed or 'none'}.\n\n{markdown_table(table, 'github')}\n",
        "A difference is within noise when its 95 % interval contains 0; between runs on the same images the "
        f"interval is paired over the images.\n\n{ties_text(ties)}\n",
    ]
    if compared:
        sections.append(f"## Comparisons\n\n{comparisons_table(compared, 'github')}\n")
    if stale:
        sections.append(f"{stale_note}\n")
    write_files({out: json_text(accuracies), details_path(out): details, out.with_suffix(".md"): "\n".join(sections)})
    if stale:
        warn(stale_note)
    echo(f"wrote {out}, {details_path(out)} and {out.with_suffix('.md')}")
