"""Running ablate's points: train and evaluate one (`run_point`), in this process or as a job (`run_point_job`), and
the runs of one ablation (`Runs`), which plans them and reuses what is finished.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.checkpoint import load_model, read_sidecar
from acdistill.config import FINETUNE, NAME, Params
from acdistill.data import load_split
from acdistill.engine import evaluate
from acdistill.io import write_json
from acdistill.pipeline.common import (
    device_of,
    echo,
    evaluation_split,
)
from acdistill.pipeline.jobs import Job, run_in_parallel
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
    that must train again, so it is overwritten; the evaluations of another student than the new one are removed,
    those of the same weights (a retraining on the same machine) kept. Returns the evaluation."""
    if train:
        trained = train_point(
            params, run, digest, point, teacher=teacher, data_dir=data_dir, device=device, distilled=distilled
        )
        for old in run.glob("eval-*.json"):
            if json.loads(old.read_text()).get("student_sha256") != trained["student_sha256"]:
                old.unlink()
    student = load_model(run / STUDENT, device)
    test = evaluation_split(params, data_dir)
    e = params.eval
    started, start = utc_now(), time.perf_counter()
    with progress.callback() as on_batch:
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
            progress=on_batch,
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
    """Train one point and write its result.json (see run_point); returns its record."""
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
    before = finished(run, digest)
    if before is not None and before.get("student_sha256") == result["student_sha256"]:
        return before  # the same student again: its record stands
    write_json(run / RESULT, result)
    return result


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
    _train_digests: dict[str, str] = field(default_factory=dict)
    ran: set[Path] = field(default_factory=set)  # runs that jobs ran just now

    def locate(self, point: dict[str, Any], p: Params, need_weights: bool) -> tuple[Path, str, str, str | None]:
        """(run directory, digest, evaluation digest, what is left to do: see `to_do`)."""
        run, digest = point_dir(self.root, point, p, self.teacher_sha, self.train_images(p))
        eval_digest = evaluation_digest(p)
        keep = need_weights or point.get(NAME) in self.params.ablate.keep_weights
        return run, digest, eval_digest, to_do(run, digest, eval_digest, keep)

    def train_images(self, p: Params) -> str:
        """The digest of a run's training images (`ImageSet.digest`), loaded once for each data section."""
        d = p.data
        key = json.dumps(d.for_training(), sort_keys=True)
        if key not in self._train_digests:
            self._train_digests[key] = load_split(d.dataset, True, d.train_subset, d.root, self.data_dir).digest()
        return self._train_digests[key]

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
        self, point: dict[str, Any], p: Params, prefix: str, need_weights: bool = False
    ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """The point's run directory, training result and evaluation, running what is missing (first its distilled
        point, when a fine-tuning point trains)."""
        run, digest, eval_digest, action = self.locate(point, p, need_weights)
        if action is None and run in self.ran:
            echo(f"{prefix}{point_label(point)}: ran in {run}")
        elif action is None:
            source = other_code(finished(run, digest))
            echo(
                f"{prefix}{point_label(point)}: finished before, reused"
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
            echo(f"{prefix}{point_label(point)}: {doing} in {run}")
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
        results = []
        with progress.task("ablate", len(points), f"{what}s") as task:
            for i, (point, p) in enumerate(zip(points, per_run), start=1):
                task.advance(0, point_label(point))
                results.append(self.result_of(point, p, f"ablate {what} {i}/{len(points)} "))
                task.advance()
        return results
