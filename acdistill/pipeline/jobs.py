"""ablate's points in parallel: each run in its own process through submitit, on this machine (`ablate.jobs`, one
GPU or a share of the CPU cores each) or as Slurm jobs (`ablate.cluster: slurm`); Ctrl-C and SIGTERM stop them.

submitit is imported only here, when jobs run: the rest of acdistill runs without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acdistill.config import AblateParams, Params
from acdistill.errors import AcdistillError, warn
from acdistill.pipeline.common import echo


def in_jobs(cfg: AblateParams) -> bool:
    """Whether ablate runs its points as jobs (ablate.jobs > 1, or on Slurm) rather than one at a time here."""
    return cfg.jobs > 1 or cfg.cluster == "slurm"


def check_jobs(cfg: AblateParams) -> None:
    """Refuse, before anything runs, jobs this machine cannot start: Slurm without srun, or jobs without submitit."""
    if cfg.cluster == "slurm" and shutil.which("srun") is None:
        raise AcdistillError(
            "ablate.cluster: slurm, but this machine has no Slurm (no srun on PATH); run it on the cluster's login "
            "node, or use cluster: local"
        )
    # submitit is imported by the functions that run jobs only: a machine without it runs points one at a time
    if in_jobs(cfg) and importlib.util.find_spec("submitit") is None:
        raise AcdistillError(
            "ablate.jobs > 1 and ablate.cluster: slurm run points through submitit, which is not installed: "
            "pip install 'acdistill[jobs]' (or run the points one at a time, jobs: 1)"
        )


@dataclass(frozen=True)
class Job:
    """One run for a job: `target(*args, device=..., threads=..., **kwargs)` in the job's process. `label` names the
    point in messages; a job that `fine_tunes` starts from another job's student, so it waits for the first wave."""

    label: str
    run: Path
    doing: str
    target: Callable[..., None]
    args: tuple
    kwargs: dict[str, Any]
    fine_tunes: bool


def executor_for(params: Params, folder: Path, device: torch.device):
    """submitit's executor for ablate.cluster, its logs in `folder`, and a function that sets the parameters of the
    job in a slot (local: which GPU it sees, slot modulo the GPUs) and returns (device, threads) for the job."""
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


def check_job(job, label: str) -> None:
    """A finished job's failure as an AcdistillError naming the point, the job's own error line and its log."""
    import submitit

    try:
        job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        # The job's traceback ends in its error's line; an acdistill error is the message a user would have seen.
        errors = [line for line in str(e).splitlines() if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", line)]
        reason = errors[-1].removeprefix(f"{AcdistillError.__module__}.AcdistillError: ") if errors else "no message"
        raise AcdistillError(
            f"ablate point {label} failed in its job: {reason[:300]} (its log: {job.paths.stderr})"
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


def submit_job(executor, job: Job, device: str, threads: int | None):
    """The job of one run; a submission the cluster refuses (sbatch's error) is an AcdistillError."""
    import submitit

    try:
        return executor.submit(job.target, *job.args, device=device, threads=threads, **job.kwargs)
    except (submitit.core.utils.FailedJobError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise AcdistillError(f"ablate point {job.label}: its job could not be submitted: {reason}") from None


def run_in_parallel(params: Params, planned: list[Job], *, runs: Path, device: torch.device) -> set[Path]:
    """Run the jobs `planned`, up to ablate.jobs at a time: first every job that needs no other, then those that
    fine-tune their students. Returns the run directories it ran; a failed job is an AcdistillError naming the point
    and its log, which is kept (the logs of jobs that all succeeded are removed)."""
    if not planned:
        return set()
    logs = runs / ".submitit"
    executor, next_job = executor_for(params, logs, device)
    ran: set[Path] = set()
    running: dict[int, tuple[Any, Job]] = {}  # slot (a share of the devices) -> submitted job, its run
    with job_signals() as submitting:
        try:
            for wave in filter(None, ([j for j in planned if not j.fine_tunes], [j for j in planned if j.fine_tunes])):
                pending = list(wave)
                while pending or running:
                    for slot in sorted(set(range(params.ablate.jobs)) - set(running))[: len(pending)]:
                        job = pending.pop(0)
                        on, threads = next_job(slot)
                        echo(f"ablate: {job.label}: {job.doing} in {job.run} (job {len(ran) + len(running) + 1})")
                        with submitting():
                            running[slot] = (submit_job(executor, job, on, threads), job)
                    time.sleep(0.5)
                    for slot, (submitted, job) in list(running.items()):
                        if submitted.done():
                            del running[slot]
                            check_job(submitted, job.label)
                            ran.add(job.run)
        except (KeyboardInterrupt, Stopped) as stop:
            print(f"ablate: stopped; {len(running)} running point(s) stopped too, to resume next time", file=sys.stderr)
            raise SystemExit(128 + (signal.SIGTERM if isinstance(stop, Stopped) else signal.SIGINT)) from None
        finally:  # a failed point, Ctrl-C or kill: the points still running stop, and resume on the next run
            stop_jobs([submitted for submitted, _ in running.values()])
    shutil.rmtree(logs, ignore_errors=True)
    return ran
