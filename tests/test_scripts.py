"""scripts/: the GPU quick profile's driver, run on CPU with a tiny budget (the GPU run itself is in RESULTS.md)."""

import subprocess
import sys

from conftest import MIRROR, REPO

TINY = ["device=cpu", "speed={}", "data.train_subset=64", "data.test_subset=32", "eval.n=16", "eval.batch_size=16"]
TINY += ["eval.attacks=[natural,pgd20]", "teacher.arch=small_cnn", "teacher.train.epochs=1", "distill.epochs=1"]
TINY += ["teacher.train.monitor_n=0", "distill.monitor_n=0", "distill.student=small_cnn", "distill.gacd.k=32"]
TINY += ["ablate.points=[{name: rslad, distill.method: rslad}, {name: gacd, distill.method: gacd}]"]


def gpu_quick(workdir, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "scripts/gpu_quick.py"), "--workdir", str(workdir)]
    return subprocess.run(
        command + [a for override in overrides for a in ("-S", override)],
        capture_output=True,
        text=True,
        env={"ACDISTILL_DATA_DIR": str(MIRROR), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=600,
    )


def test_gpu_quick_runs_end_to_end_and_writes_its_table(tmp_path):
    done = gpu_quick(tmp_path / "run", *TINY)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "run/results.md").read_text()
    assert "| teacher | small_cnn | sat, 1-step attack | 1 | " in table
    assert "| rslad | small_cnn | rslad | 1 | " in table and "| gacd | small_cnn | gacd | 1 | " in table
    assert "| students (ablate) | " in table
    again = gpu_quick(tmp_path / "run", *TINY, "teacher.arch=resnet20")
    assert again.returncode == 2
    assert (
        again.stderr
        == "error: models/teacher.safetensors was trained with other teacher settings; pass --force to retrain it\n"
    )
    assert (tmp_path / "run/results.md").read_text() == table
