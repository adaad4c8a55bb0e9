import json
import subprocess
import sys

from conftest import REPO


def test_pgd_benchmark_smoke():
    done = subprocess.run([sys.executable, "-m", "bench.pgd_eval", "--model", "small_cnn", "--batch-size", "4",
                           "--steps", "1", "--repeats", "1", "--json"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ours_images_per_s"] > 0 and result["torchattacks_images_per_s"] > 0
