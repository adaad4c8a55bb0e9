"""Progress on long work: off a terminal (dvc, CI, Slurm) a plain line when a task starts and then every
ACDISTILL_PROGRESS_SECONDS, with its rate and ETA; Ctrl-C or SIGTERM during training says what was kept, exit
code 130 or 143."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIRROR, REPO, run
from test_reliability import SLOW, copy_teacher, state_epoch

from acdistill import progress
from acdistill.errors import AcdistillError

LINE = re.compile(r"^teacher: \d+/\d+ batches \(epoch \d+/50, batch \d+/\d+.*\), [\d.]+ batches/s, ETA \S+$")


def popen(cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    env = {**os.environ, "ACDISTILL_DATA_DIR": str(MIRROR), "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "acdistill", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # not a terminal, as under dvc
        text=True,
    )


def test_off_a_terminal_a_training_prints_a_progress_line_within_seconds(workdir, tmp_path):
    d = copy_teacher(workdir, tmp_path)
    args = ["fetch-teacher", "--out", "models/t.safetensors", "-S", "teacher.train.epochs=50", *SLOW]
    proc = popen(d, *args, ACDISTILL_PROGRESS_SECONDS="1")
    started, lines = time.monotonic(), []
    try:
        while not any(LINE.match(line) for line in lines):
            assert time.monotonic() - started < 60, f"no progress line with a rate and an ETA in 60 s: {lines}"
            lines.append(proc.stderr.readline().rstrip("\n"))
            assert proc.poll() is None or lines[-1], f"the run ended first: {lines}"
    finally:
        proc.kill()
        proc.wait()
    assert re.fullmatch(r"teacher: 0/\d+ batches", lines[0])  # at once, before the first batch
    assert not any("\x1b" in line or "━" in line for line in lines)  # no bar, no colour codes


def test_lines_are_spaced_by_the_interval(monkeypatch, capsys):
    monkeypatch.setenv(progress.INTERVAL_ENV, "3600")
    with progress.task("pgd20", 1000) as task:
        for _ in range(10):
            task.advance(100)
    assert capsys.readouterr().err.splitlines() == ["pgd20: 0/1000 images"]
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    with progress.task("pgd20", 1000) as task:
        task.advance(400, "apgd-ce")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "pgd20: 0/1000 images"
    assert re.fullmatch(r"pgd20: 400/1000 images \(apgd-ce\), [\d.]+ images/s, ETA \S+", lines[1])


def test_nested_loops_share_one_display_and_notes_go_to_the_innermost(monkeypatch, capsys):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    with progress.task("ablate: points", 2, "points") as points, progress.callback() as on_batch:
        on_batch("aa-fast", 0, 8)
        progress.note("apgd-t")
        on_batch("aa-fast", 8, 8)
        points.advance()
    err = capsys.readouterr().err
    assert "aa-fast: 0/8 images (apgd-t)" in err and "ablate: points: 1/2 points" in err
    assert progress._current == []  # closed with the outermost loop


@pytest.mark.parametrize("text", ["abc", "-1", "nan"])
def test_a_bad_interval_is_one_line(text, monkeypatch, here):
    monkeypatch.setenv(progress.INTERVAL_ENV, text)
    with pytest.raises(AcdistillError, match="ACDISTILL_PROGRESS_SECONDS"):
        progress.line_interval()
    out = run("attack-eval", "--model", "models/teacher.safetensors", "--attacks", "natural", ok=False).output
    assert f"ACDISTILL_PROGRESS_SECONDS='{text}': give the seconds between progress lines" in out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_during_training_says_what_was_kept_and_exits_128_plus_the_signal_then_resumes(
    stop, workdir, tmp_path
):
    d = copy_teacher(workdir, tmp_path)
    proc = popen(d, "distill", "-S", "distill.epochs=8", *SLOW)
    started = time.monotonic()
    while state_epoch(d / "models/state/student.pt") < 1:
        assert proc.poll() is None and time.monotonic() - started < 120, "no first epoch"
        time.sleep(0.05)
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + stop
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"distill: interrupted after epoch (\d+) of 8; run the same command to resume \(models/state/student.pt\)"
        + (r" \(SIGTERM\)" if stop == signal.SIGTERM else ""),
        last,
    ), err
    assert "Traceback" not in err and not (d / "models/student.safetensors").exists()
    assert not list(d.rglob(".*.lock")), "the stopped run left its lock files"
    kept = int(re.search(r"epoch (\d+) of", last).group(1))
    resumed = popen(d, "distill", "-S", "distill.epochs=8", *SLOW)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and f"resuming after epoch {kept} of 8" in err, err
