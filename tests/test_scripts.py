"""scripts/gpu_quick.py, the GPU evidence run, on the CPU with a tiny budget and tiny subsets (the GPU run itself
is in RESULTS.md), and its refusals."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import MIRROR, REPO

TINY = ["speed={}", "data.train_subset=64", "data.test_subset=32", "eval.n=16", "eval.n_per_attack={aa-fast: 8}"]
TINY += ["eval.batch_size=16", "eval.steps=2", "teacher.arch=small_cnn", "teacher.train.epochs=1"]
TINY += ["teacher.train.monitor_n=0", "teacher.train.batch_size=16", "distill.student=small_cnn", "distill.epochs=1"]
TINY += ["distill.monitor_n=0", "distill.batch_size=16", "distill.gacd.k=32", "aft.monitor_n=0", "aft.batch_size=16"]
POINTS = ["sat", "ard", "rslad", "crdnd", "crdnd-no-acm", "gacd", "gacd-aft", "gacd-eq10"]


def gpu_quick(out, *args: str, overrides=TINY, data_dir=MIRROR) -> subprocess.CompletedProcess:
    """The script as a user runs it: no PYTHONPATH (it imports its own checkout's acdistill), one thread (two
    threads on two busy cores run tiny models many times slower)."""
    command = [sys.executable, str(REPO / "scripts/gpu_quick.py"), "--out", str(out), *args]
    return subprocess.run(
        command + [a for override in overrides for a in ("-S", override)],
        capture_output=True,
        text=True,
        env={"ACDISTILL_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


def accuracies_of(results: dict) -> dict:
    return {r["model"]: {a: v["accuracy"] for a, v in r["eval"].items()} for r in results["rows"]}


def refused(done: subprocess.CompletedProcess) -> str:
    """The refusal's line: exit code 2, the last line on stderr, no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.splitlines()[-1]


def test_the_evidence_run_writes_its_table_resumes_and_refuses_other_settings(tmp_path):
    out = tmp_path / "run"
    done = gpu_quick(out, "--cpu", "--budget", "5")
    assert done.returncode == 0, done.stderr
    report = (out / "results.md").read_text()
    assert report in done.stdout
    assert "| teacher | small_cnn | sat, 1-step attack | 1 | " in report
    for name in POINTS:
        epochs = "1 + 1" if name == "gacd-aft" else "1"
        method = {"crdnd-no-acm": "crdnd", "gacd-eq10": "gacd", "gacd-aft": "gacd + AFT (sat)"}.get(name, name)
        assert f"| {name} | small_cnn | {method} | {epochs} | " in report
    for ordering in ["ard ≥ sat", "gacd-aft ≥ sat", "gacd-aft ≥ ard", "crdnd ≥ rslad", "crdnd ≥ crdnd-no-acm"]:
        assert f"| {ordering} | " in report
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["rows"]] == ["teacher", *POINTS]
    assert results["plan"]["student_epochs"] == 1 and results["plan"]["aft_epochs"] == 1
    assert {o["verdict"] for o in results["orderings"]} <= {"holds", "fails", "within noise"}
    assert len(results["orderings"]) == 3 * (len(POINTS) - 1 + 3)
    accuracies = accuracies_of(results)

    # Killed during RSLAD's evaluation: the rerun reuses the plan, the teacher and the other students
    (rslad,) = (out / "ablate").glob("rslad-*")
    (rslad / "result.json").unlink()
    again = gpu_quick(out, "--cpu", "--budget", "5")
    assert again.returncode == 0, again.stderr
    assert "reusing the plan" in again.stdout and "measuring an epoch" not in again.stdout
    assert "ablate point 3/8 rslad: running in" in again.stdout
    assert again.stdout.count("finished before, reused") == 7
    assert accuracies_of(json.loads((out / "results.json").read_text())) == accuracies
    report = (out / "results.md").read_text()

    stale = gpu_quick(out, "--cpu", "--budget", "5", overrides=[*TINY, "teacher.arch=resnet20"])
    assert refused(stale) == (
        "error: models/teacher.safetensors was trained with other teacher settings; pass --force to retrain it"
    )
    replanned = gpu_quick(out, "--cpu", "--budget", "6")
    assert refused(replanned) == (
        f"error: {out}/plan.json was planned for other settings (budget 5 min, or other params); pass --force to "
        "plan again, or choose another --out"
    )
    assert (out / "results.md").read_text() == report


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_without_cuda_it_is_one_line_and_writes_nothing(tmp_path):
    done = gpu_quick(tmp_path / "run")
    assert refused(done) == "error: no CUDA device on this machine: this run measures a GPU (--cpu runs it on the CPU)"
    assert done.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_data_directory_without_cifar10_names_what_it_looked_for(tmp_path):
    (tmp_path / "data").mkdir()
    done = gpu_quick(tmp_path / "run", "--cpu", data_dir=tmp_path / "data")
    assert refused(done) == (
        f"error: no cifar10 in {tmp_path / 'data'}: looked for cifar10_lossless_subset.npz and cifar10_jpeg.npz "
        "(unpack_device_pack.py writes cifar10_jpeg.npz from cifar10_device_pack.npz)"
    )
    assert done.stderr.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_data_directory_without_all_training_images_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/cifar10_lossless_subset.npz").symlink_to(MIRROR / "cifar10_lossless_subset.npz")
    overrides = [o for o in TINY if not o.startswith("data.train_subset")]  # all training images
    done = gpu_quick(tmp_path / "run", "--cpu", overrides=overrides, data_dir=tmp_path / "data")
    assert refused(done) == (
        f"error: {tmp_path / 'data'} holds 4000 cifar10 training images (mirror:cifar10_lossless_subset.npz), not all "
        "50000: the teacher trains on all of them; add cifar10_jpeg.npz"
    )
    assert not (tmp_path / "run").exists()


def test_a_budget_too_small_for_one_epoch_gives_the_smallest_that_fits(tmp_path):
    done = gpu_quick(tmp_path / "run", "--cpu", "--budget", "0.01")
    line = refused(done)
    assert line.startswith("error: a budget of 0.01 min is too small for one epoch of every student on this machine: ")
    smallest = float(line.split("the smallest that fits is ")[1].split(" min")[0])
    assert smallest > 0.01 and not (tmp_path / "run").exists()


def test_the_device_is_not_an_override(tmp_path):
    done = gpu_quick(tmp_path / "run", "--cpu", overrides=[*TINY, "device=cpu"])
    assert refused(done) == "error: the device is CUDA, or the CPU with --cpu; -S device is not taken"
    assert not (tmp_path / "run").exists()
