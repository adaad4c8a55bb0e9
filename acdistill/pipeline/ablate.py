"""acdistill ablate: distill and evaluate one student per point of a parameter grid (or a list of points), then
tabulate them. A point with `adv_finetune: true` fine-tunes the distilled student of the same point without it.
With `seeds`, every point runs once per seed, and the table gives each column's mean ± standard deviation: a single
seed can mislead, as three seeds of the study's students show (RESULTS.md, investigation 7).

Each point runs in its own directory, ablate/<point>-<hash>/, named by the hash of everything that decides its
result (its validated params and the teacher's sha256). A finished point is reused as long as that hash matches,
so widening a grid runs only the new points, and an interrupted ablation resumes mid-point from the epoch state.
The DVC stage keeps ablate/ with `persist: true` for the same reason. The hash leaves out the code, so that editing
a docstring does not retrain a study; instead each result records the acdistill code that produced it, and a run
reused from other code is named in the output, to be deleted and rerun where the change matters.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import ABLATE_SECTIONS, FINETUNE, NAME, Params, fingerprint
from acdistill.data import load_split
from acdistill.engine import evaluate
from acdistill.errors import AcdistillError, warn
from acdistill.io import claim_outputs, write_json, write_text
from acdistill.methods import METHODS
from acdistill.pipeline.common import ProgressBars, check_json_out, device_of, echo, writes
from acdistill.pipeline.training import distill, finetune
from acdistill.provenance import code_info, machine_info, source_digest

RESULT = "result.json"


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
        return params.with_overrides(
            {**params.ablate.fixed, **{k: v for k, v in point.items() if k not in (FINETUNE, NAME)}}
        )
    except AcdistillError as e:
        raise AcdistillError(f"ablate point {point_label(point)}: {e}") from None


def point_dir(root: Path, point: dict[str, Any], params: Params, teacher_sha: str | None) -> tuple[Path, str]:
    """The point's directory and the hash of what decides its result (not the ablate section itself, so that
    editing the grid leaves the finished points' hashes alone)."""
    dumped = params.model_dump(mode="json")
    sections = (*ABLATE_SECTIONS, "aft") if point.get(FINETUNE) else ABLATE_SECTIONS
    digest = fingerprint({k: dumped[k] for k in sections}, teacher_sha256=teacher_sha)
    # The same settings reached under another label (a grid key set to its default value) reuse that directory.
    existing = sorted(root.glob(f"*-{digest[:8]}")) if root.is_dir() else []
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", point_label(point))[:80]
    return (existing[0] if existing else root / f"{slug}-{digest[:8]}"), digest


def link_latest(link: Path, run: Path) -> None:
    """runs/<name> -> the named point's run directory, so that later stages can name a path without its hash."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise AcdistillError(f"cannot link {link} to {run.name}: {link} exists and is not a link")
    link.symlink_to(run.name, target_is_directory=True)


def finished(run: Path, digest: str) -> dict[str, Any] | None:
    try:
        result = json.loads((run / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("fingerprint") == digest else None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_point(
    params: Params,
    run: Path,
    digest: str,
    point: dict[str, Any],
    *,
    teacher: Path,
    data_dir: Path | None,
    device: torch.device,
    distilled: tuple[Path, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train (resuming its epoch state) and evaluate one point: distill a student, or, for a fine-tuning point,
    fine-tune `distilled` (the finished distilled point's directory and result). A student already in `run` is
    from an unfinished attempt at this same point, since the point has no result yet, so it is overwritten."""
    started, start = utc_now(), time.perf_counter()
    kwargs = dict(
        teacher=teacher,
        out=run / "student.safetensors",
        data_dir=data_dir,
        device=device,
        resume=True,
        force=True,
        run_dir=run,
    )
    if distilled is None:
        summary = distill(params, metrics=run / "distill.json", **kwargs)
        before = 0.0
    else:
        summary = finetune(params, model=distilled[0] / "student.safetensors", metrics=run / "aft.json", **kwargs)
        before = distilled[1]["train_minutes"]  # a fine-tuned student costs its distillation too
    train_minutes = before + (time.perf_counter() - start) / 60
    student = load_model(run / "student.safetensors", device)
    test = load_split(params.data.dataset, False, params.data.test_subset, params.data.root, data_dir)
    e = params.eval
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
    result = {
        "fingerprint": digest,
        "code": code_info(),
        "machine": machine_info(),
        "point": point,
        "method": params.distill.method,
        "student": params.distill.student,
        "train_minutes": round(train_minutes, 2),
        "train_images": summary["train_images"],
        "eval": results,
        "started": started,
        "finished": utc_now(),
    }
    write_json(run / RESULT, result)
    return result


def other_code(result: dict[str, Any]) -> str | None:
    """The source digest of the code that produced a finished result when it is not this code's ("unrecorded"
    for results written before acdistill recorded it), else None."""
    source = result.get("code", {}).get("source")
    return None if source == source_digest() else source or "unrecorded"


def row_of(point: dict[str, Any], result: dict[str, Any], run: Path) -> dict[str, Any]:
    attacks = {name: r["accuracy"] for name, r in result["eval"].items()}
    last = [name for name in result["eval"] if name != "all_attacks"][-1]
    return {
        **point,
        **attacks,
        f"worst_class_{last}": result["eval"][last]["worst_class"],
        "train_minutes": result["train_minutes"],
        "run": str(run),
    }


def descending(value: Any) -> tuple:
    """Sort key: numbers largest first, then other values (a method name, an unset column) alphabetically."""
    return (0, -value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def mean_and_sd(points: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point from its runs (consecutive in `rows`, one per seed): each measured column's mean, and its
    sample standard deviation as <column>_sd (null from a single run)."""
    per_point = len(rows) // len(points)
    out = []
    for point, start in zip(points, range(0, len(rows), per_point)):
        runs = rows[start : start + per_point]
        row: dict[str, Any] = {**point, "seeds": [r["seed"] for r in runs]}
        for column in (k for k in runs[0] if k not in point and k not in ("seed", "run")):
            values = [r[column] for r in runs]
            row[column] = round(statistics.fmean(values), 3)
            row[f"{column}_sd"] = round(statistics.stdev(values), 3) if len(values) > 1 else None
        out.append({**row, "runs": [r["run"] for r in runs]})
    return out


def markdown_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows as a table; a column with a <column>_sd companion shows as mean ± sd."""
    if not rows:
        return "(no points)"
    keys = dict.fromkeys(k for r in rows for k in r)  # explicit points set different keys
    headers = [k for k in keys if k not in ("run", "runs") and not (k.endswith("_sd") and k[:-3] in keys)]

    def cell(row: dict[str, Any], key: str) -> Any:
        sd = row.get(f"{key}_sd")
        return f"{row[key]:.2f} ± {sd:.2f}" if sd is not None else row.get(key, "")

    return tabulate([[cell(r, k) for k in headers] for r in rows], headers=headers, tablefmt=fmt, floatfmt=".2f")


def plan(
    runs_to_do: list[dict[str, Any]], per_run: list[Params], params: Params, runs: Path, teacher_sha: str | None
) -> list[tuple[dict[str, Any], Params, Path, str, Path | None]]:
    """The unfinished runs, each once (points that reach the same settings share a directory), with the distilled
    run each fine-tuning point starts from: (point, params, run directory, digest, distilled run or None)."""
    todo: dict[Path, tuple] = {}
    by_digest: dict[str, Path] = {}

    def add(point: dict[str, Any], p: Params) -> Path:
        run, digest = point_dir(runs, point, p, teacher_sha)
        run = by_digest.setdefault(digest, run)
        distilled = None
        if point.get(FINETUNE):
            first = distilled_point(point)
            distilled = add(first, point_params(params, first))
        if finished(run, digest) is None and run not in todo:
            todo[run] = (point, p, run, digest, distilled)
        return run

    for point, p in zip(runs_to_do, per_run):
        add(point, p)
    return list(todo.values())


def run_point_job(
    params: Params,
    run: Path,
    digest: str,
    point: dict[str, Any],
    *,
    teacher: Path,
    data_dir: Path | None,
    device: str,
    threads: int | None,
    distilled: Path | None,
) -> None:
    """`run_point` in a job's own process: its share of the CPU cores, its device (the one GPU a local job sees, as
    cuda), and the finished distilled point a fine-tuning point starts from."""
    # submitit's jobs ignore SIGTERM (Slurm sends it before a preemption), and ablate starts them ignoring SIGINT
    # (job_signals); ablate stops a local job with SIGTERM (stop_jobs). The epoch state stays for a resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if threads is not None:
        torch.set_num_threads(threads)
    before = (distilled, json.loads((distilled / RESULT).read_text())) if distilled is not None else None
    run_point(
        params,
        run,
        digest,
        point,
        teacher=teacher,
        data_dir=data_dir,
        device=device_of(params, device),
        distilled=before,
    )


def executor_for(params: Params, folder: Path, device: torch.device):
    """submitit's executor for ablate.cluster, its logs in `folder`, and a function that sets the parameters of the
    job in a slot (local: which GPU it sees, slot modulo the GPUs) and returns (device, threads) for run_point_job."""
    import submitit

    cfg = params.ablate
    if cfg.cluster == "slurm":
        s = cfg.slurm
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            timeout_min=s.timeout_min,
            gpus_per_node=s.gpus_per_node,
            cpus_per_task=s.cpus_per_task,
            slurm_partition=s.partition,
            mem_gb=s.mem_gb,
            slurm_additional_parameters=s.additional_parameters,
        )
        on = "cuda" if s.gpus_per_node else "cpu"
        return executor, lambda slot: (on, None)
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=7 * 24 * 60)  # a point may train for days; submitit's default is 2 min
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if cfg.jobs > gpus:
            warn(f"ablate: {cfg.jobs} jobs on {gpus} GPUs; the jobs share them")

        def next_job(slot: int) -> tuple[str, int | None]:
            executor.update_parameters(gpus_per_node=1, visible_gpus=(slot % gpus,))
            return "cuda", None

        return executor, next_job
    cores = os.cpu_count() or 1
    if cfg.jobs > cores:
        warn(f"ablate: {cfg.jobs} jobs on {cores} CPU cores; the jobs share them")
    threads = max(1, cores // cfg.jobs)
    return executor, lambda slot: (str(device), threads)


def check_job(job, point: dict[str, Any]) -> None:
    """A finished job's failure as an AcdistillError naming the point, the job's own error line and its log."""
    import submitit

    try:
        job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        # The job's traceback ends in its error's line; an acdistill error is the message a user would have seen.
        errors = [line for line in str(e).splitlines() if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", line)]
        reason = errors[-1].removeprefix(f"{AcdistillError.__module__}.AcdistillError: ") if errors else "no message"
        raise AcdistillError(
            f"ablate point {point_label(point)} failed in its job: {reason[:300]} (its log: {job.paths.stderr})"
        ) from None


def stop_jobs(jobs: list) -> None:
    """Stop running jobs and wait for them to end; their points resume from their epoch state next time. A local
    job gets SIGTERM through its submitit controller, which forwards it to the job and then ends quietly (submitit's
    own cancel sends the controller SIGINT, which a process started in the background ignores)."""
    import submitit

    local = [job for job in jobs if isinstance(job, submitit.local.local.LocalJob) and job._process is not None]
    for job in jobs:
        if job in local:
            job._process.send_signal(signal.SIGTERM)
        else:
            job.cancel(check=False)
    for job in local:
        try:
            job._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            job._process.kill()


class Stopped(Exception):
    """SIGTERM while jobs run: ablate stops them, then exits with 128 + SIGTERM, as a process killed by it would
    (Ctrl-C: 128 + SIGINT)."""


@contextmanager
def job_signals() -> Iterator[Callable[[], AbstractContextManager]]:
    """SIGTERM (`kill`) and Ctrl-C stop this process's jobs instead of leaving them running without it, or printing
    their tracebacks. Yields a context for each submission: the jobs it starts ignore Ctrl-C (the terminal sends it to
    every process of the foreground group), so that this process alone receives it and stops them quietly."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield nullcontext
        return

    def on_sigterm(*_):
        raise Stopped

    @contextmanager
    def ignoring_ctrl_c():
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, handler)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield ignoring_ctrl_c
    finally:
        signal.signal(signal.SIGTERM, previous)


def submit_job(executor, point: dict[str, Any], *args, **kwargs):
    """The job of one point; a submission the cluster refuses (sbatch's error) is an AcdistillError."""
    import submitit

    try:
        return executor.submit(run_point_job, *args, **kwargs)
    except (submitit.core.utils.FailedJobError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise AcdistillError(f"ablate point {point_label(point)}: its job could not be submitted: {reason}") from None


def run_in_parallel(
    params: Params,
    planned: list[tuple[dict[str, Any], Params, Path, str, Path | None]],
    *,
    runs: Path,
    teacher: Path,
    data_dir: Path | None,
    device: torch.device,
) -> set[Path]:
    """Run the unfinished runs `planned` (point, params, run directory, digest, its distilled run or None), up to
    ablate.jobs at a time: first every distilled point, then the points that fine-tune them. Returns the run
    directories it ran; a failed job is an AcdistillError naming the point and its log, which is kept (the logs of
    jobs that all succeeded are removed)."""
    if not planned:
        return set()
    logs = runs / ".submitit"
    executor, next_job = executor_for(params, logs, device)
    ran: set[Path] = set()
    running: dict[int, tuple[Any, dict[str, Any], Path]] = {}  # slot (a share of the devices) -> job, point, run
    with job_signals() as submitting:
        try:
            for wave in filter(None, ([p for p in planned if p[4] is None], [p for p in planned if p[4] is not None])):
                pending = list(wave)
                while pending or running:
                    for slot in sorted(set(range(params.ablate.jobs)) - set(running))[: len(pending)]:
                        point, p, run, digest, distilled = pending.pop(0)
                        on, threads = next_job(slot)
                        echo(f"ablate: {point_label(point)}: running in {run} (job {len(ran) + len(running) + 1})")
                        with submitting():
                            job = submit_job(
                                executor,
                                point,
                                p,
                                run,
                                digest,
                                point,
                                teacher=teacher,
                                data_dir=data_dir,
                                device=on,
                                threads=threads,
                                distilled=distilled,
                            )
                        running[slot] = (job, point, run)
                    time.sleep(0.5)
                    for slot, (job, point, run) in list(running.items()):
                        if job.done():
                            del running[slot]
                            check_job(job, point)
                            ran.add(run)
        except (KeyboardInterrupt, Stopped) as stop:
            print(f"ablate: stopped; {len(running)} running point(s) stopped too, to resume next time", file=sys.stderr)
            raise SystemExit(128 + (signal.SIGTERM if isinstance(stop, Stopped) else signal.SIGINT)) from None
        finally:  # a failed point, Ctrl-C or kill: the points still running stop, and resume on the next run
            stop_jobs([job for job, _, _ in running.values()])
    shutil.rmtree(logs, ignore_errors=True)
    return ran


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
    """Distill and evaluate a student at every point of `params.ablate`'s grid, then at each explicit point: the
    params, then ablate.fixed, then the point's values; with ablate.seeds, once per seed. Each run lives in its
    own directory under `runs`; finished runs are reused. Writes `out` (.json) and its markdown table; returns the
    table's rows ("points"), the runs of each seed ("runs") and the labels of runs reused from other code."""
    cfg = params.ablate
    points = expand(cfg.grid) + cfg.points
    if not points:
        raise AcdistillError("ablate: no points; set ablate.grid or ablate.points in params, or pass --grid KEY=V1,V2")
    runs_to_do = with_seeds(points, cfg.seeds)
    per_run = [point_params(params, p) for p in runs_to_do]  # every run validated before any starts
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
    teacher_sha = read_sidecar(teacher)["sha256"] if needs_teacher else None
    claim_outputs()

    stale: list[str] = []  # labels of the finished runs reused from other acdistill code
    ran: set[Path] = set()  # runs that jobs (ablate.jobs > 1, or Slurm) ran just now
    if cfg.jobs > 1 or cfg.cluster == "slurm":
        ran = run_in_parallel(
            params,
            plan(runs_to_do, per_run, params, runs, teacher_sha),
            runs=runs,
            teacher=teacher,
            data_dir=data_dir,
            device=dev,
        )

    def result_of(point: dict[str, Any], p: Params, progress: str) -> tuple[Path, dict[str, Any]]:
        """The point's finished result, running it (and first its distilled point, when fine-tuning) if needed."""
        run, digest = point_dir(runs, point, p, teacher_sha)
        result = finished(run, digest)
        if result is not None and run in ran:
            echo(f"{progress}{point_label(point)}: ran in {run}")
        elif result is not None:
            source = other_code(result)
            echo(
                f"{progress}{point_label(point)}: finished before, reused"
                + (f"; trained by other acdistill code (source {source}, now {source_digest()})" if source else "")
            )
            if source:
                stale.append(point_label(point))
        else:
            echo(f"{progress}{point_label(point)}: running in {run}")
            distilled = None
            if point.get(FINETUNE):
                first = distilled_point(point)
                distilled = result_of(first, point_params(params, first), "  first the distilled point ")
            result = run_point(
                p, run, digest, point, teacher=teacher, data_dir=data_dir, device=dev, distilled=distilled
            )
        if NAME in point and (not cfg.seeds or point["seed"] == cfg.seeds[0]):  # with seeds: the first seed's run
            link_latest(runs / point[NAME], run)
        return run, result

    rows = []
    for i, (point, p) in enumerate(zip(runs_to_do, per_run), start=1):
        run, result = result_of(point, p, f"ablate {'run' if cfg.seeds else 'point'} {i}/{len(runs_to_do)} ")
        rows.append(row_of(point, result, run))
    table = mean_and_sd(points, rows) if cfg.seeds else rows
    if cfg.sort_by is not None:
        table.sort(key=lambda r: descending(r.get(cfg.sort_by)))
    order = f"sorted by {cfg.sort_by}, descending" if cfg.sort_by else "in grid order"
    students = (
        f"{len(cfg.seeds)} students per point, one per seed, as mean ± sample standard deviation"
        if cfg.seeds
        else "One student per point"
    )
    stale_note = (
        f"Trained by other acdistill code than this table's (source {source_digest()}), and reused: "
        f"{', '.join(stale)}. Delete a run's directory to retrain it."
        if stale
        else ""
    )
    echo(markdown_table(table, "simple"))
    write_json(
        out,
        {
            "grid": cfg.grid,
            "explicit_points": cfg.points,
            "fixed": cfg.fixed,
            "teacher": str(teacher),
            "points": table,
            **({"seeds": cfg.seeds, "runs": rows} if cfg.seeds else {}),
            "code": code_info(),
            "reused_from_other_code": stale,
        },
    )
    write_text(
        out.with_suffix(".md"),
        f"# Ablation\n\n{students} ({order}); accuracies in %, fixed settings "
        f"{cfg.fixed or 'none'}.\n\n{markdown_table(table, 'github')}\n" + (f"\n{stale_note}\n" if stale else ""),
    )
    if stale:
        warn(stale_note)
    echo(f"wrote {out} and {out.with_suffix('.md')}")

    return {"points": table, **({"runs": rows} if cfg.seeds else {}), "reused_from_other_code": stale}
