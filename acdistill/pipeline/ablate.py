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
reused from other code that decides results (provenance.PRESENTATION lists the code that does not) is named in
the output, to be deleted and rerun where the change matters.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import FINETUNE, NAME, POINT_KEYS, SEARCH_BY, Params, fingerprint
from acdistill.engine import evaluate
from acdistill.errors import AcdistillError, warn
from acdistill.io import claim_outputs, write_json, write_text
from acdistill.methods import METHODS
from acdistill.pipeline.common import (
    ProgressBars,
    check_json_out,
    device_of,
    echo,
    evaluation_split,
    teacher_sha256,
    writes,
)
from acdistill.pipeline.compare import (
    comparisons,
    comparisons_table,
    descending,
    markdown_table,
    measured_points,
    over_seeds_rows,
    row_of,
    search_table,
    ties_text,
    ties_with_best,
)
from acdistill.pipeline.jobs import Job, run_in_parallel
from acdistill.pipeline.training import distill, finetune
from acdistill.provenance import code_info, machine_info, source_digest

RESULT = "result.json"  # a run's training; each evaluation of it is eval-<hash>.json
STUDENT = "student.safetensors"


def expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the value lists, first key varying slowest (the order the table is read in); an empty grid
    has no points."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []


def with_seeds(points: list[dict[str, Any]], seeds: list[int] | None) -> list[dict[str, Any]]:
    """Each point once per seed, the seed set as a point key: a run's hash and directory are those of the same
    point without `seeds` but with that `seed` in the params, so finished runs are reused either way."""
    return [{**point, "seed": seed} for point in points for seed in seeds] if seeds else points


def point_label(point: dict[str, Any]) -> str:
    if NAME in point:
        return point[NAME] + (f",seed={point['seed']}" if "seed" in point else "")
    return ",".join(f"{k}={v}" for k, v in point.items()) or "base"


def distilled_point(point: dict[str, Any]) -> dict[str, Any]:
    """The point whose distilled student a fine-tuning point starts from: the same point without fine-tuning."""
    return {k: v for k, v in point.items() if k not in (FINETUNE, NAME) and not k.startswith("aft.")}


def point_params(params: Params, point: dict[str, Any]) -> Params:
    """The params of one point: `params`, then ablate.fixed, then the point's values."""
    try:
        return params.with_overrides({**params.ablate.fixed, **{k: v for k, v in point.items() if k not in POINT_KEYS}})
    except AcdistillError as e:
        raise AcdistillError(f"ablate point {point_label(point)}: {e}") from None


def point_dir(root: Path, point: dict[str, Any], params: Params, teacher_sha: str | None) -> tuple[Path, str]:
    """The point's directory and the hash of what decides its trained student: the seed, the data (but the held-out
    images), the distill section (and aft for a fine-tuning point) and the teacher; not the ablate section, so that
    editing the grid leaves the finished points' hashes alone, nor the evaluation."""
    dumped = params.model_dump(mode="json")
    sections = ("seed", "distill", "aft") if point.get(FINETUNE) else ("seed", "distill")
    decided = {k: dumped[k] for k in sections} | {"data": params.data.for_training()}
    digest = fingerprint(decided, teacher_sha256=teacher_sha)
    # The same settings reached under another label (a grid key set to its default value) reuse that directory.
    existing = sorted(root.glob(f"*-{digest[:8]}")) if root.is_dir() else []
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", point_label(point))[:80]
    return (existing[0] if existing else root / f"{slug}-{digest[:8]}"), digest


def evaluation_digest(params: Params) -> str:
    """The hash of what decides an evaluation of a trained student: the eval and data sections and the seed."""
    dumped = params.model_dump(mode="json")
    return fingerprint({k: dumped[k] for k in ("seed", "data", "eval")})


def evaluation_path(run: Path, digest: str) -> Path:
    return run / f"eval-{digest[:8]}.json"


def link_latest(link: Path, run: Path) -> None:
    """runs/<name> -> the named point's run directory, so that later stages can name a path without its hash."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise AcdistillError(f"cannot link {link} to {run.name}: {link} exists and is not a link")
    link.symlink_to(run.name, target_is_directory=True)


def read_result(path: Path, digest: str) -> dict[str, Any] | None:
    """The result at `path` if it was written for `digest`."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("fingerprint") == digest else None


def finished(run: Path, digest: str) -> dict[str, Any] | None:
    """The run's training result, if it trained with these settings."""
    return read_result(run / RESULT, digest)


def has_weights(run: Path) -> bool:
    return (run / STUDENT).is_file() and (run / STUDENT).with_suffix(".json").is_file()


def to_do(run: Path, digest: str, eval_digest: str, need_weights: bool) -> str | None:
    """What a run still needs: "train" (and then evaluate), "evaluate", or None. A run trained before whose weights
    are gone (a clone holds only the small results) trains again only when it must be evaluated anew, or when its
    weights are needed (`need_weights`: a point fine-tunes it, or ablate.keep_weights names it)."""
    if finished(run, digest) is None:
        return "train"
    weights = has_weights(run)
    if read_result(evaluation_path(run, eval_digest), eval_digest) is None:
        return "evaluate" if weights else "train"
    return "train" if need_weights and not weights else None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_point(
    params: Params,
    run: Path,
    digest: str,
    eval_digest: str,
    point: dict[str, Any],
    *,
    teacher: Path,
    data_dir: Path | None,
    device: torch.device,
    distilled: tuple[Path, dict[str, Any]] | None = None,
    train: bool = True,
) -> dict[str, Any]:
    """Train (resuming its epoch state) and evaluate one point, or with `train` false only evaluate its student:
    distill a student, or, for a fine-tuning point, fine-tune `distilled` (the finished distilled point's directory
    and result). A student already in `run` is from an unfinished attempt at this same point, or from a finished one
    that must train again, so it is overwritten, and the evaluations of the old student are removed. Returns the
    evaluation."""
    if train:
        for old in run.glob("eval-*.json"):
            old.unlink()
        train_point(params, run, digest, point, teacher=teacher, data_dir=data_dir, device=device, distilled=distilled)
    student = load_model(run / STUDENT, device)
    test = evaluation_split(params, data_dir)
    e = params.eval
    started, start = utc_now(), time.perf_counter()
    with ProgressBars() as progress:
        results = evaluate(
            student,
            test,
            e.attacks,
            budget=e.budget(),
            batch_size=e.batch_size,
            n=e.n,
            limits=e.n_per_attack,
            seed=params.seed,
            device=device,
            progress=progress,
        )
    evaluation = {
        "fingerprint": eval_digest,
        "code": code_info(),
        "machine": machine_info(),
        "split": e.split,
        "student_sha256": read_sidecar(run / STUDENT)["sha256"],
        "eval": results,
        "minutes": round((time.perf_counter() - start) / 60, 2),
        "started": started,
        "finished": utc_now(),
    }
    write_json(evaluation_path(run, eval_digest), evaluation)
    return evaluation


def train_point(
    params: Params,
    run: Path,
    digest: str,
    point: dict[str, Any],
    *,
    teacher: Path,
    data_dir: Path | None,
    device: torch.device,
    distilled: tuple[Path, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Train one point and write its result.json (see run_point)."""
    started, start = utc_now(), time.perf_counter()
    kwargs = dict(teacher=teacher, out=run / STUDENT, data_dir=data_dir, device=device, resume=True, force=True)
    if distilled is None:
        summary = distill(params, metrics=run / "distill.json", run_dir=run, **kwargs)
        before = 0.0
    else:
        summary = finetune(params, model=distilled[0] / STUDENT, metrics=run / "aft.json", run_dir=run, **kwargs)
        before = distilled[1]["train_minutes"]  # a fine-tuned student costs its distillation too
    result = {
        "fingerprint": digest,
        "code": code_info(),
        "machine": machine_info(),
        "point": point,
        "method": params.distill.method,
        "student": params.distill.student,
        "student_sha256": read_sidecar(run / STUDENT)["sha256"],
        "train_minutes": round(before + (time.perf_counter() - start) / 60, 2),
        "train_images": summary["train_images"],
        "started": started,
        "finished": utc_now(),
    }
    write_json(run / RESULT, result)
    return result


def other_code(result: dict[str, Any]) -> str | None:
    """The digest of the code that decided a finished result (provenance.source_digest, results_only) when it is not
    this code's ("unrecorded" for results written before acdistill recorded it), else None: an edit to the CLI, the
    tables or the reports leaves finished results as they were."""
    decided = result.get("code", {}).get("results")
    return None if decided == results_digest() else decided or "unrecorded"


def results_digest() -> str:
    return source_digest(results_only=True)


def run_point_job(
    params: Params,
    run: Path,
    digest: str,
    eval_digest: str,
    point: dict[str, Any],
    *,
    teacher: Path,
    data_dir: Path | None,
    device: str,
    threads: int | None,
    train: bool,
    distilled: Path | None,
) -> None:
    """`run_point` in a job's own process: its share of the CPU cores, its device (the one GPU a local job sees, as
    cuda), and the finished distilled point a fine-tuning point starts from."""
    # submitit's jobs ignore SIGTERM (Slurm sends it before a preemption), and ablate starts them ignoring SIGINT
    # (jobs.job_signals); ablate stops a local job with SIGTERM (jobs.stop_jobs). The epoch state stays for a resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if threads is not None:
        torch.set_num_threads(threads)
    before = (distilled, json.loads((distilled / RESULT).read_text())) if distilled is not None else None
    run_point(
        params,
        run,
        digest,
        eval_digest,
        point,
        teacher=teacher,
        data_dir=data_dir,
        device=device_of(params, device),
        distilled=before,
        train=train,
    )


@dataclass
class Runs:
    """The runs of one ablation: where they live, what they distill from, and what happened to them."""

    params: Params
    root: Path
    teacher: Path
    teacher_sha: str | None
    data_dir: Path | None
    device: torch.device
    stale: list[str] = field(default_factory=list)  # labels of finished runs reused from other acdistill code
    ran: set[Path] = field(default_factory=set)  # runs that jobs ran just now

    def locate(self, point: dict[str, Any], p: Params, need_weights: bool) -> tuple[Path, str, str, str | None]:
        """(run directory, digest, evaluation digest, what is left to do: see `to_do`)."""
        run, digest = point_dir(self.root, point, p, self.teacher_sha)
        eval_digest = evaluation_digest(p)
        keep = need_weights or point.get(NAME) in self.params.ablate.keep_weights
        return run, digest, eval_digest, to_do(run, digest, eval_digest, keep)

    def plan(self, points: list[dict[str, Any]], per_run: list[Params]) -> list[Job]:
        """The runs with work left, as jobs, each once (points that reach the same settings share a directory); a
        fine-tuning point that trains brings its distilled point, which must keep its weights."""
        jobs: dict[Path, Job] = {}

        def add(point: dict[str, Any], p: Params, need_weights: bool) -> Path:
            run, digest, eval_digest, action = self.locate(point, p, need_weights)
            distilled = None
            if action == "train" and point.get(FINETUNE):
                first = distilled_point(point)
                distilled = add(first, point_params(self.params, first), True)
            if action is not None and run not in jobs:
                jobs[run] = Job(
                    label=point_label(point),
                    run=run,
                    doing="running" if action == "train" else "evaluating",
                    target=run_point_job,
                    args=(p, run, digest, eval_digest, point),
                    kwargs=dict(
                        teacher=self.teacher, data_dir=self.data_dir, train=action == "train", distilled=distilled
                    ),
                    fine_tunes=distilled is not None,
                )
            return run

        for point, p in zip(points, per_run):
            add(point, p, False)
        return list(jobs.values())

    def result_of(
        self, point: dict[str, Any], p: Params, progress: str, need_weights: bool = False
    ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """The point's run directory, training result and evaluation, running what is missing (first its distilled
        point, when a fine-tuning point trains)."""
        run, digest, eval_digest, action = self.locate(point, p, need_weights)
        if action is None and run in self.ran:
            echo(f"{progress}{point_label(point)}: ran in {run}")
        elif action is None:
            source = other_code(finished(run, digest))
            echo(
                f"{progress}{point_label(point)}: finished before, reused"
                + (f"; trained by other acdistill code (source {source}, now {results_digest()})" if source else "")
            )
            if source:
                self.stale.append(point_label(point))
        else:
            distilled = None
            if action == "train" and point.get(FINETUNE):
                first = distilled_point(point)
                first_run, first_result, _ = self.result_of(
                    first, point_params(self.params, first), "  first the distilled point ", need_weights=True
                )
                distilled = (first_run, first_result)
            doing = "running" if action == "train" else "trained before, evaluating"
            echo(f"{progress}{point_label(point)}: {doing} in {run}")
            run_point(
                p,
                run,
                digest,
                eval_digest,
                point,
                teacher=self.teacher,
                data_dir=self.data_dir,
                device=self.device,
                distilled=distilled,
                train=action == "train",
            )
        return run, finished(run, digest), read_result(evaluation_path(run, eval_digest), eval_digest)

    def run_all(
        self, points: list[dict[str, Any]], per_run: list[Params], what: str
    ) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
        """Every run of `points` (with ablate.jobs > 1 or on Slurm, the missing ones in parallel first)."""
        cfg = self.params.ablate
        if cfg.jobs > 1 or cfg.cluster == "slurm":
            self.ran |= run_in_parallel(self.params, self.plan(points, per_run), runs=self.root, device=self.device)
        return [
            self.result_of(point, p, f"ablate {what} {i}/{len(points)} ")
            for i, (point, p) in enumerate(zip(points, per_run), start=1)
        ]


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
        tried = []
        for value, (_, _, evaluation) in zip(search.values, found):
            r = evaluation["eval"][entry["by"]]
            tried.append({"value": value, "accuracy": r["accuracy"], "ci95": r.get("ci95")})
        best = max(tried, key=lambda t: t["accuracy"])  # the first of equals: the order of search.values
        chosen[base] = best["value"]
        records.append({"point": entry["label"], "by": entry["by"], "values": tried, "chosen": best["value"]})
    return [
        point if search.key in point else {**point, search.key: chosen[base_of(point)]} for point in points
    ], records


@writes("out", dirs=("runs",))
def ablate(
    params: Params,
    *,
    teacher: Path = Path("models/teacher.safetensors"),
    runs: Path = Path("ablate"),
    out: Path = Path("metrics/ablate.json"),
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Distill and evaluate a student at every point of `params.ablate`'s grid, then at each explicit point (those
    of ablate.only): the params, then ablate.fixed, then the point's values; with ablate.search, first the search
    for each point's setting; with ablate.seeds, once per seed. Each run lives in its own directory under `runs`;
    finished runs are reused. Writes `out` (.json) and its markdown table; returns the table's rows ("points"), the
    runs of each seed ("runs"), the search ("search"), the comparisons and the labels of runs reused from other
    code."""
    cfg = params.ablate
    if cfg.only is None:
        points = expand(cfg.grid) + cfg.points
    else:  # the named points alone, in their order in the params
        points = [p for p in cfg.points if p.get(NAME) in cfg.only]
    if not points:
        raise AcdistillError("ablate: no points; set ablate.grid or ablate.points in params, or pass --grid KEY=V1,V2")
    if cfg.search is not None and params.data.val_subset is None:
        raise AcdistillError("ablate.search chooses on held-out images: set data.val_subset (e.g. 10000:11000)")
    first_seed = cfg.seeds[0] if cfg.seeds else None
    # every run validated before any starts, the search's with each of its values
    per_run = [point_params(params, p) for p in with_seeds(points, cfg.seeds)]
    for point, p in zip(with_seeds(points, cfg.seeds), per_run):
        if p.eval.split == "val" and p.data.val_subset is None:
            raise AcdistillError(f"ablate point {point_label(point)}: eval.split 'val' needs data.val_subset")
    if cfg.search is not None:
        for point in points:
            for value in cfg.search.values:
                point_params(params, {**point, cfg.search.key: value, "eval.split": "val"})
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
    if cfg.sort_by is not None:
        table.sort(key=lambda r: descending(r.get(cfg.sort_by)))
    stale = ablation.stale
    write_outputs(params, out, teacher, table, rows, search, ties, compared, stale, per_run)
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
    table: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    search: list[dict[str, Any]],
    ties: dict[str, dict[str, Any]],
    compared: list[dict[str, Any]],
    stale: list[str],
    per_run: list[Params],
) -> None:
    """ablate's JSON and markdown, and its terminal table."""
    cfg = params.ablate
    order = f"sorted by {cfg.sort_by}, descending" if cfg.sort_by else "in grid order"
    students = (
        f"{len(cfg.seeds)} students per point, one per seed: each accuracy is their mean with its 95 % interval over "
        "seeds and test images, other columns mean ± sample standard deviation"
        if cfg.seeds
        else "One student per point: each accuracy with its 95 % interval over the test images (Wilson)"
    )
    stale_note = (
        f"Trained by other acdistill code than this table's (source {results_digest()}), and reused: "
        f"{', '.join(stale)}. Delete a run's directory to retrain it."
        if stale
        else ""
    )
    split = {p.eval.split for p in per_run}
    images = "held-out training images (data.val_subset)" if split == {"val"} else "test images"
    if search:
        echo(search_table(search, cfg.search.key, "simple"))
    echo(markdown_table(table, "simple"))
    if compared:
        echo(comparisons_table(compared, "simple"))
    write_json(
        out,
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
        },
    )
    sections = ["# Ablation\n"]
    if search:
        s = cfg.search
        sections.append(
            f"## Search: {s.key} on the held-out training images (data.val_subset {params.data.val_subset})\n\n"
            f"Each point's {s.key} is the value with the highest held-out accuracy under its `by` attack (with its "
            f"95 % interval over those images), trained at the first seed; the table below runs that value.\n\n"
            f"{search_table(search, s.key, 'github')}\n"
        )
    sections += [
        f"{students} ({order}); accuracies in % on the {images}, fixed settings {cfg.fixed or 'none'}.\n\n"
        f"{markdown_table(table, 'github')}\n",
        "A difference is within noise when its 95 % interval contains 0; between runs on the same images the "
        f"interval is paired over the images.\n\n{ties_text(ties)}\n",
    ]
    if compared:
        sections.append(f"## Comparisons\n\n{comparisons_table(compared, 'github')}\n")
    if stale:
        sections.append(f"{stale_note}\n")
    write_text(out.with_suffix(".md"), "\n".join(sections))
    if stale:
        warn(stale_note)
    echo(f"wrote {out} and {out.with_suffix('.md')}")
