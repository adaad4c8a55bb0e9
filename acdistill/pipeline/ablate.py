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

ablate plans its points and checks every run before any starts (acdistill.pipeline.points), runs them here or as
jobs (acdistill.pipeline.runs, acdistill.pipeline.jobs), tabulates them (acdistill.pipeline.compare), and writes
the tables (here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from acdistill.config import NAME, Params
from acdistill.errors import warn
from acdistill.io import claim_outputs, json_text, write_files
from acdistill.methods import METHODS
from acdistill.pipeline.common import (
    TEACHER_CHECKPOINT,
    check_json_out,
    details_path,
    device_of,
    echo,
    teacher_sha256,
    writes,
)
from acdistill.pipeline.compare import (
    AblationTables,
    ablation_tables,
    comparisons_table,
    markdown_table,
    search_choice,
    search_table,
    ties_text,
)
from acdistill.pipeline.jobs import check_jobs
from acdistill.pipeline.points import (
    ablation_points,
    check_sort_by,
    checked_runs,
    link_latest,
    point_params,
    results_digest,
    search_base,
    search_trials,
    with_seeds,
)
from acdistill.pipeline.runs import Runs
from acdistill.provenance import code_info


def searched(
    runs: Runs, points: list[dict[str, Any]], first_seed: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ablate.search: each point with its chosen value of search.key set (points that set the key keep theirs), and
    one record per searched point ({point, by, values: [{value, accuracy, ci95}], chosen, within_noise}: see
    compare.search_choice). A fine-tuning point takes the value chosen for its distilled point."""
    search = runs.params.ablate.search
    if search is None:
        return points, []
    todo = search_trials(search, points, first_seed)
    trials = [t for entry in todo.values() for t in entry["trials"]]
    found = runs.run_all(trials, [point_params(runs.params, t) for t in trials], "search run")
    n = len(search.values)
    records = [
        search_choice(entry["label"], entry["by"], search.values, [e for _, _, e in found[i * n : (i + 1) * n]])
        for i, entry in enumerate(todo.values())
    ]
    chosen = {base: record["chosen"] for base, record in zip(todo, records)}
    return [
        point if search.key in point else {**point, search.key: chosen[search_base(point)]} for point in points
    ], records


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
    points = ablation_points(params)
    per_run = checked_runs(params, points, data_dir)
    check_sort_by(cfg, points, per_run)
    check_json_out(out)
    check_jobs(cfg)
    dev = device_of(params, device)
    needs_teacher = any(METHODS.get(p.distill.method).needs_teacher for p in per_run)
    teacher_sha = teacher_sha256(teacher, params) if needs_teacher else None
    claim_outputs()

    ablation = Runs(params, runs, teacher, teacher_sha, data_dir, dev)
    first_seed = cfg.seeds[0] if cfg.seeds else None
    points, search = searched(ablation, points, first_seed)
    runs_to_do = with_seeds(points, cfg.seeds)
    per_run = [point_params(params, p) for p in runs_to_do]
    results = ablation.run_all(runs_to_do, per_run, "run" if cfg.seeds else "point")
    for point, (run, _, _) in zip(runs_to_do, results):
        if NAME in point and point.get("seed", first_seed) == first_seed:  # with seeds: the first seed's run
            link_latest(runs / point[NAME], run)
    tables = ablation_tables(cfg, points, runs_to_do, per_run, results)
    write_outputs(params, out, teacher, tables, search, ablation.stale, per_run)
    return {
        "points": tables.table,
        **({"runs": tables.rows} if cfg.seeds else {}),
        "search": search,
        "comparisons": tables.comparisons,
        "reused_from_other_code": ablation.stale,
    }


def markdown_report(
    params: Params, tables: AblationTables, search: list[dict[str, Any]], split: set[str], stale_note: str
) -> str:
    """ablate's markdown page: the search, the table with what its numbers are, the ties and the comparisons."""
    cfg = params.ablate
    images = "held-out training images (data.val_subset)" if split == {"val"} else "test images"
    order = f", sorted by {cfg.sort_by}, descending" if cfg.sort_by else ""
    students = (
        f"{len(cfg.seeds)} students per point, one per seed: each accuracy (%, on the {images}) is their mean with "
        "its 95 % interval over seeds and images; other columns are mean ± sample standard deviation"
        if cfg.seeds
        else f"One student per point: each accuracy (%, on the {images}) with its 95 % interval over them (Wilson)"
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
        f"{students}{order}. Fixed settings: {cfg.fixed or 'none'}.\n\n{markdown_table(tables.table, 'github')}\n",
        "A difference is within noise when its 95 % interval contains 0; between runs on the same images the "
        f"interval is paired over the images.\n\n{ties_text(tables.ties)}\n",
    ]
    if tables.comparisons:
        sections.append(f"## Comparisons\n\n{comparisons_table(tables.comparisons, 'github')}\n")
    if stale_note:
        sections.append(f"{stale_note}\n")
    return "\n".join(sections)


def write_outputs(
    params: Params,
    out: Path,
    teacher: Path,
    tables: AblationTables,
    search: list[dict[str, Any]],
    stale: list[str],
    per_run: list[Params],
) -> None:
    """ablate's metrics (`out`: each point's accuracy and interval per attack), its details (<out>_details.json:
    the table's rows, the runs, the search, the comparisons), its markdown table (.md) and its terminal table."""
    cfg = params.ablate
    split = {p.eval.split for p in per_run}
    stale_note = (
        f"Trained by other acdistill code than this table's (source {results_digest()}), and reused: "
        f"{', '.join(stale)}. Delete a run's directory to retrain it."
        if stale
        else ""
    )
    if search:
        echo(search_table(search, cfg.search.key, "simple"))
    echo(markdown_table(tables.table, "simple"))
    echo(ties_text(tables.ties))
    if tables.comparisons:
        echo(comparisons_table(tables.comparisons, "simple"))
    details = json_text(
        {
            "grid": cfg.grid,
            "explicit_points": cfg.points,
            "fixed": cfg.fixed,
            "teacher": str(teacher),
            "evaluated_on": sorted(split),
            "points": tables.table,
            **({"seeds": cfg.seeds, "runs": tables.rows} if cfg.seeds else {}),
            "search": search,
            "within_noise_of_best": tables.ties,
            "comparisons": tables.comparisons,
            "code": code_info(),
            "reused_from_other_code": stale,
        }
    )
    markdown = markdown_report(params, tables, search, split, stale_note)
    write_files({out: json_text(tables.accuracies), details_path(out): details, out.with_suffix(".md"): markdown})
    if stale:
        warn(stale_note)
    echo(f"wrote {out}, {details_path(out)} and {out.with_suffix('.md')}")
