"""Running ablate's points: train and evaluate one (`run_point`), in this process or as a job (`run_point_job`, which
jobs.run_in_parallel starts), and the runs of one ablation (`Runs`), which finds what each has left to do and reuses
what is finished.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import FINETUNE, NAME, Params
from acdistill.data import load_split
from acdistill.io import write_json
from acdistill.pipeline.common import (
    device_of,
    echo,
    evaluation_split,
)
from acdistill.pipeline.evaluation import attack_results
from acdistill.pipeline.jobs import Job, in_jobs, run_in_parallel
from acdistill.pipeline.points import (
    RESULT,
    STUDENT,
    distilled_point,
    evaluation_digest,
    evaluation_path,
    finished,
    other_code,
    point_dir,
    point_label,
    point_params,
    read_result,
    results_digest,
    to_do,
    utc_now,
)
from acdistill.pipeline.training import distill, finetune
from acdistill.provenance import code_info, machine_info


@dataclass(frozen=True)
class PointRun:
    """One run of a point: its params, its directory and the digests of its training and its evaluation (see
    points.point_dir), whether it trains (then evaluates) or only evaluates its student, and, for a fine-tuning point
    that trains, `distilled`: the run directory of the finished distilled point it starts from."""

    params: Params
    run: Path
    digest: str
    eval_digest: str
    point: dict[str, Any]
    train: bool
    distilled: Path | None = None


def run_point(task: PointRun, *, teacher: Path, data_dir: Path | None, device: torch.device) -> dict[str, Any]:
    """Train (resuming its epoch state) and evaluate one point, or with `task.train` false only evaluate its
    student: distill a student, or, for a fine-tuning point, fine-tune the student of `task.distilled`. A student
    already in the run is from an unfinished attempt at this same point, or from a finished one that must train
    again, so it is overwritten; the evaluations of another student than the new one are removed, those of the same
    weights (a retraining on the same machine) kept. Returns the evaluation."""
    run = task.run
    if task.train:
        trained = train_point(task, teacher=teacher, data_dir=data_dir, device=device)
        for old in run.glob("eval-*.json"):
            if json.loads(old.read_text()).get("student_sha256") != trained["student_sha256"]:
                old.unlink()
    student = load_model(run / STUDENT, device)
    test = evaluation_split(task.params, data_dir)
    started, start = utc_now(), time.perf_counter()
    with progress.callback() as on_batch:
        results = attack_results(student, test, task.params, device, on_batch)
    evaluation = {
        "fingerprint": task.eval_digest,
        "code": code_info(),
        "machine": machine_info(),
        "split": task.params.eval.split,
        "student_sha256": read_sidecar(run / STUDENT)["sha256"],
        "eval": results,
        "minutes": round((time.perf_counter() - start) / 60, 2),
        "started": started,
        "finished": utc_now(),
    }
    write_json(evaluation_path(run, task.eval_digest), evaluation)
    return evaluation


def train_point(task: PointRun, *, teacher: Path, data_dir: Path | None, device: torch.device) -> dict[str, Any]:
    """Train one point and write its result.json (see run_point); returns its record."""
    params, run = task.params, task.run
    started, start = utc_now(), time.perf_counter()
    kwargs = dict(teacher=teacher, out=run / STUDENT, data_dir=data_dir, device=device, resume=True, force=True)
    if task.distilled is None:
        summary = distill(params, metrics=run / "distill.json", run_dir=run, **kwargs)
        before = 0.0
    else:
        before = json.loads((task.distilled / RESULT).read_text())["train_minutes"]  # it costs its distillation too
        summary = finetune(params, model=task.distilled / STUDENT, metrics=run / "aft.json", run_dir=run, **kwargs)
    result = {
        "fingerprint": task.digest,
        "code": code_info(),
        "machine": machine_info(),
        "point": task.point,
        "method": params.distill.method,
        "student": params.distill.student,
        "student_sha256": read_sidecar(run / STUDENT)["sha256"],
        "train_minutes": round(before + (time.perf_counter() - start) / 60, 2),
        "train_images": summary["train_images"],
        "started": started,
        "finished": utc_now(),
    }
    previous = finished(run, task.digest)
    if previous is not None and previous.get("student_sha256") == result["student_sha256"]:
        return previous  # the same student again: its record stands
    write_json(run / RESULT, result)
    return result


def run_point_job(task: PointRun, *, teacher: Path, data_dir: Path | None, device: str, threads: int | None) -> None:
    """`run_point` in a job's own process, with its share of the CPU cores and its device (the one GPU a local job
    sees, as cuda)."""
    # submitit's jobs ignore SIGTERM (Slurm sends it before a preemption), and ablate starts them ignoring SIGINT
    # (jobs.job_signals); ablate stops a local job with SIGTERM (jobs.stop_jobs). The epoch state stays for a resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if threads is not None:
        torch.set_num_threads(threads)
    run_point(task, teacher=teacher, data_dir=data_dir, device=device_of(task.params, device))


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
    _train_digests: dict[str, str] = field(default_factory=dict)
    ran: set[Path] = field(default_factory=set)  # runs that jobs ran just now

    def locate(self, point: dict[str, Any], p: Params, need_weights: bool) -> tuple[PointRun, str | None]:
        """The point's run, and what is left to do: see `to_do`."""
        run, digest = point_dir(self.root, point, p, self.teacher_sha, self.train_images(p))
        eval_digest = evaluation_digest(p)
        keep = need_weights or point.get(NAME) in self.params.ablate.keep_weights
        action = to_do(run, digest, eval_digest, keep)
        return PointRun(p, run, digest, eval_digest, point, train=action == "train"), action

    def train_images(self, p: Params) -> str:
        """The digest of a run's training images (`ImageSet.digest`), loaded once for each data section."""
        d = p.data
        key = json.dumps(d.for_training(), sort_keys=True)
        if key not in self._train_digests:
            self._train_digests[key] = load_split(d.dataset, True, d.train_subset, d.root, self.data_dir).digest()
        return self._train_digests[key]

    def distilled_of(self, point: dict[str, Any]) -> tuple[dict[str, Any], Params]:
        """The distilled point a fine-tuning point starts from, and its params."""
        first = distilled_point(point)
        return first, point_params(self.params, first)

    def plan(self, points: list[dict[str, Any]], per_run: list[Params]) -> list[Job]:
        """The runs with work left, as jobs, each once (points that reach the same settings share a directory); a
        fine-tuning point that trains brings its distilled point, which must keep its weights."""
        jobs: dict[Path, Job] = {}
        for point, p in zip(points, per_run):
            self.add_job(jobs, point, p, False)
        return list(jobs.values())

    def add_job(self, jobs: dict[Path, Job], point: dict[str, Any], p: Params, need_weights: bool) -> Path:
        """Add the point's job to `jobs` (by run directory) if it has work left, after its distilled point's when
        it fine-tunes; returns its run directory."""
        task, action = self.locate(point, p, need_weights)
        if task.train and point.get(FINETUNE):
            task = replace(task, distilled=self.add_job(jobs, *self.distilled_of(point), True))
        if action is not None and task.run not in jobs:
            jobs[task.run] = Job(
                label=point_label(point),
                run=task.run,
                doing="running" if task.train else "evaluating",
                target=run_point_job,
                args=(task,),
                kwargs=dict(teacher=self.teacher, data_dir=self.data_dir),
                fine_tunes=task.distilled is not None,
            )
        return task.run

    def result_of(
        self, point: dict[str, Any], p: Params, prefix: str, need_weights: bool = False
    ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """The point's run directory, training result and evaluation, running what is missing (first its distilled
        point, when a fine-tuning point trains)."""
        task, action = self.locate(point, p, need_weights)
        if action is None and task.run in self.ran:
            echo(f"{prefix}{point_label(point)}: ran in {task.run}")
        elif action is None:
            source = other_code(finished(task.run, task.digest))
            echo(
                f"{prefix}{point_label(point)}: finished before, reused"
                + (f"; trained by other acdistill code (source {source}, now {results_digest()})" if source else "")
            )
            if source:
                self.stale.append(point_label(point))
        else:
            if task.train and point.get(FINETUNE):
                first_run, _, _ = self.result_of(
                    *self.distilled_of(point), "  first the distilled point ", need_weights=True
                )
                task = replace(task, distilled=first_run)
            doing = "running" if task.train else "trained before, evaluating"
            echo(f"{prefix}{point_label(point)}: {doing} in {task.run}")
            run_point(task, teacher=self.teacher, data_dir=self.data_dir, device=self.device)
        evaluation = read_result(evaluation_path(task.run, task.eval_digest), task.eval_digest)
        return task.run, finished(task.run, task.digest), evaluation

    def run_all(
        self, points: list[dict[str, Any]], per_run: list[Params], what: str
    ) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
        """Every run of `points` (with ablate.jobs > 1 or on Slurm, the missing ones in parallel first)."""
        if in_jobs(self.params.ablate):
            self.ran |= run_in_parallel(self.params, self.plan(points, per_run), runs=self.root, device=self.device)
        results = []
        with progress.task("ablate", len(points), f"{what}s") as task:
            for i, (point, p) in enumerate(zip(points, per_run), start=1):
                task.advance(0, point_label(point))
                results.append(self.result_of(point, p, f"ablate {what} {i}/{len(points)} "))
                task.advance()
        return results
