"""Faults injected into real runs: SIGKILL at any moment, a kill then --resume (bit-identical weights), a truncated
download, runs on the same or other outputs at once, an existing result without --force, a NaN loss; and the
mode of the files written."""

import hashlib
import http.server
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import MIRROR, REPO, run
from safetensors.torch import load_file
from test_trainer import make_trainer

from acdistill import load_model
from acdistill.config import TrainParams
from acdistill.data import load_split
from acdistill.errors import AcdistillError
from acdistill.io import lock_path, output_lock, write_json
from acdistill.teachers import url as url_source

# Enough images that an epoch of the tiny models lasts about a second: room to kill a run between epochs.
SLOW = ["-S", "data.train_subset=768", "-S", "distill.monitor_n=0"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ACDISTILL_DATA_DIR": str(MIRROR), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "acdistill", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended first:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def copy_teacher(src: Path, dst: Path) -> Path:
    (dst / "models").mkdir(parents=True)
    shutil.copy(src / "params.yaml", dst)
    for name in ("teacher.safetensors", "teacher.json"):
        shutil.copy(src / "models" / name, dst / "models" / name)
    return dst


def state_epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"] if path.is_file() else 0


@pytest.mark.parametrize("method", ["gacd", "crdnd"])
def test_a_killed_run_resumes_to_bit_identical_weights(workdir, tmp_path, method):
    args = ["distill", "--method", method, "-S", "distill.epochs=3", *SLOW]
    straight = copy_teacher(workdir, tmp_path / "straight")
    assert start(straight, *args).wait() == 0
    killed = copy_teacher(workdir, tmp_path / "killed")
    proc = start(killed, *args)
    wait_for(lambda: state_epoch(killed / "models/state/student.pt") >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "models/student.safetensors").exists()  # killed mid-run, not after
    resumed = start(killed, *args)
    output = resumed.communicate()[0]
    assert resumed.returncode == 0 and "resuming after epoch" in output, output
    a = load_file(straight / "models/student.safetensors")
    b = load_file(killed / "models/student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5, 3.5, 4.5])
def test_sigkill_at_any_moment_leaves_only_readable_files(workdir, tmp_path, delay):
    d = copy_teacher(workdir, tmp_path / "run")
    proc = start(d, "distill", "-S", "distill.epochs=3", *SLOW)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = d / "models/state/student.pt"
    if state.exists():
        assert state_epoch(state) >= 1
    if (d / "models/student.safetensors").exists():
        load_model(d / "models/student.safetensors")  # checks the sidecar's sha256 too
        json.loads((d / "metrics/student.json").read_text())


def lock_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.lock"))


def test_runs_with_different_outputs_go_side_by_side_and_one_on_the_same_output_refuses(workdir, tmp_path, monkeypatch):
    d = copy_teacher(workdir, tmp_path / "run")
    first = start(d, "distill", "-S", "distill.epochs=50", *SLOW)
    lock = lock_path(d / "models/student.safetensors")
    wait_for(lambda: lock.is_file() and lock.read_text(), first)
    monkeypatch.chdir(d)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    # another checkpoint in the same directories: its metrics, state and curves are named after it
    run("distill", "--out", "models/other.safetensors")
    assert load_model(d / "models/other.safetensors") and (d / "metrics/other.json").is_file()
    assert (d / "dvclive/other").is_dir() and first.poll() is None  # the first still runs
    refused = run("distill", "--out", "models/student.safetensors", "--force", ok=False).output
    assert f"is being written by another acdistill run (pid {first.pid}: acdistill distill" in refused
    assert "models/student.safetensors" in refused
    refused = run("distill", "--out", "models/third.safetensors", "--metrics", "metrics/student.json", ok=False).output
    assert "metrics/student.json is being written by another acdistill run" in refused
    assert not (d / "models/third.safetensors").exists() and not (d / "models/state/third.pt").exists()
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The kernel dropped the dead run's locks: the next run on its output goes ahead, and leaves no lock file.
    run("distill", "--out", "models/student.safetensors", "-S", "distill.epochs=1", "--no-resume")
    assert lock_files(d) == []


def test_a_finished_run_leaves_no_lock_file(here):
    run(
        "attack-eval",
        "--model",
        "models/teacher.safetensors",
        "--attacks",
        "natural",
        "--n",
        "8",
        "--out",
        "metrics/locks.json",
        "-S",
        "eval.sweep=null",
    )
    assert (here / "metrics/locks.json").is_file() and lock_files(here) == []


def test_a_finished_result_is_kept_unless_force(here):
    before = hashlib.sha256((here / "metrics/eval_student.json").read_bytes()).hexdigest()
    args = [
        "attack-eval",
        "--model",
        "models/student.safetensors",
        "--attacks",
        "natural",
        "--n",
        "8",
        "--out",
        "metrics/eval_student.json",
        "-S",
        "eval.sweep=null",
    ]
    assert "already holds a finished result; pass --force" in run(*args, ok=False).output
    assert hashlib.sha256((here / "metrics/eval_student.json").read_bytes()).hexdigest() == before
    run(*args, "--force")
    assert json.loads((here / "metrics/eval_student_details.json").read_text())["natural"]["n"] == 8
    for command in ("fetch-teacher", "distill", "adv-finetune"):
        assert "already holds a finished result" in run(command, ok=False).output


class Truncating(http.server.BaseHTTPRequestHandler):
    """Promises 10 000 bytes and sends 100, then closes: a download cut off mid-way."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.write(b"\0" * 100)

    def log_message(self, *args):
        pass


def test_a_truncated_download_is_an_error_and_nothing_is_kept(here, tmp_path, monkeypatch):
    monkeypatch.setattr(url_source, "CACHE_DIR", tmp_path / "cache")
    server = http.server.HTTPServer(("127.0.0.1", 0), Truncating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/teacher.safetensors"
        result = run(
            "fetch-teacher",
            "--source",
            "url",
            "--url",
            url,
            "--sha256",
            "0" * 64,
            "--out",
            "models/t_url.safetensors",
            "--metrics",
            "metrics/t_url.json",
            ok=False,
        )
    finally:
        server.shutdown()
    assert f"download of {url} was cut off: 100 of 10000 bytes; nothing was kept" in result.output
    assert not (tmp_path / "cache").exists()  # neither a file nor the directories made for it
    assert not (here / "models/t_url.safetensors").exists()


def test_a_nan_in_a_later_epoch_keeps_the_last_good_state(tmp_path, mirror):
    data = load_split("cifar10", True, 32, data_dir=mirror)
    trainer = make_trainer(tmp_path, TrainParams(method="natural", epochs=3, batch_size=32, monitor_n=0))
    good_loss = trainer.method.loss

    def nan_in_epoch_two(batch, x_adv):
        terms = good_loss(batch, x_adv)
        if state_epoch(tmp_path / "state.pt") == 1:
            terms["ce"] = terms["ce"] * float("inf")
        return terms

    trainer.method.loss = nan_in_epoch_two
    with pytest.raises(AcdistillError, match="loss term 'ce' is inf in epoch 2"):
        trainer.fit(data)
    assert state_epoch(tmp_path / "state.pt") == 1


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


# Saves small_cnn (seeded) to a path, dying with os._exit at the given os.replace call of the save, as a SIGKILL
# would (no cleanup runs); with a file-size limit instead, reports the error the save raised.
SAVE_SCRIPT = """
import os, resource, sys, torch
from acdistill import create_model, save_model
from acdistill.errors import AcdistillError
path, seed, kill_at, size_limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(seed)
model = create_model("small_cnn")
calls, replace = [], os.replace
def dying_replace(*args):
    calls.append(args)
    if len(calls) == kill_at:
        os._exit(9)
    replace(*args)
os.replace = dying_replace
if size_limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_limit, size_limit))
try:
    save_model(model, path, dataset="cifar10")
except AcdistillError as e:
    print(e)
    sys.exit(2)
"""


def save_in_process(path: Path, seed: int, *, kill_at: int = 0, size_limit: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", SAVE_SCRIPT, str(path), str(seed), str(kill_at), str(size_limit)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def weights_of(seed: int) -> dict:
    torch.manual_seed(seed)
    from acdistill import create_model

    return create_model("small_cnn").state_dict()


# A pair is replaced by three renames: the commit record, then the weights, then the sidecar.
@pytest.mark.parametrize("kill_at, survivor", [(1, "old"), (2, "new"), (3, "new")])
def test_a_checkpoint_replaced_by_a_run_killed_between_its_files_reads_whole(tmp_path, kill_at, survivor):
    path = tmp_path / "m.safetensors"
    assert save_in_process(path, seed=1).returncode == 0
    killed = save_in_process(path, seed=2, kill_at=kill_at)
    assert killed.returncode == 9, killed.stderr
    loaded = load_model(path).state_dict()  # the pair is whole: its sha256 matches
    expected = weights_of(1 if survivor == "old" else 2)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert save_in_process(path, seed=3).returncode == 0  # the next save clears what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_a_write_past_a_file_size_limit_is_one_line_and_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    assert save_in_process(path, seed=1).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    failed = save_in_process(path, seed=2, size_limit=path.stat().st_size // 2)
    assert failed.returncode == 2, failed.stderr
    assert failed.stdout == f"cannot write {path}: File too large\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_state_file_past_a_file_size_limit_stops_the_run_in_one_line(workdir, tmp_path):
    d = copy_teacher(workdir, tmp_path / "run")
    limit = (d / "models/teacher.safetensors").stat().st_size  # the student's state, with its optimizer, is larger
    env = {**os.environ, "ACDISTILL_DATA_DIR": str(MIRROR), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "acdistill", "distill", "-S", "distill.epochs=2"],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_FSIZE, (limit, limit)),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: cannot write models/state/student.pt: File too large"
    assert "Traceback" not in done.stderr
    assert not (d / "models/state/student.pt").exists() and not (d / "models/student.safetensors").exists()
    assert not list((d / "models").rglob("*.tmp"))


def test_each_checkpoint_resumes_from_its_own_state_whatever_ran_between(workdir, tmp_path, monkeypatch):
    d = copy_teacher(workdir, tmp_path / "run")
    monkeypatch.chdir(d)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    run("distill", "--out", "models/a.safetensors")
    run("distill", "--method", "natural", "--out", "models/b.safetensors")
    again = run("distill", "--out", "models/a.safetensors", "--force").output
    assert "resuming after epoch 1 of 1 (models/state/a.pt)" in again, again
    assert sorted(p.name for p in (d / "models/state").iterdir()) == ["a.pt", "b.pt"]


def test_an_index_file_rewritten_between_runs_is_other_data_for_resume_and_ablate(workdir, tmp_path, monkeypatch):
    d = copy_teacher(workdir, tmp_path / "run")
    monkeypatch.chdir(d)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    index = d / "subset.txt"
    index.write_text("\n".join(map(str, range(64))) + "\n")
    distill = ["distill", "-S", "data.train_subset=subset.txt"]
    ablate = ["ablate", "-S", "data.train_subset=subset.txt", "--grid", "distill.gacd.reweight=true"]
    run(*distill)
    run(*ablate)
    assert "resuming after epoch 1 of 1" in run(*distill, "--force").output  # the same images: resumed
    assert "finished before, reused" in run(*ablate).output
    index.write_text("\n".join(map(str, range(64, 128))) + "\n")  # same path, other images
    rerun = run(*distill, "--force").output
    assert "was written with other settings; starting over" in rerun and "resuming" not in rerun, rerun
    rerun = run(*ablate).output
    assert "running in" in rerun and "reused" not in rerun, rerun


def test_the_directories_a_stopped_run_made_for_its_outputs_are_removed(tmp_path):
    out = tmp_path / "new" / "deeper" / "student.safetensors"
    with pytest.raises(KeyboardInterrupt), output_lock(out):
        assert out.parent.is_dir()  # made for the lock file, before the long work
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
