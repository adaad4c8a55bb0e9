"""acdistill on a machine without the packages that only one feature needs (submitit for ablate's jobs, dvclive and
dvc for the pipeline), and the version ranges that admit an air-gapped GPU node's torch and POT (docs/gpu.md)."""

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from conftest import MIRROR, REPO
from packaging.requirements import Requirement

from acdistill.analysis import read_dvclive_series
from acdistill.engine.curves import DvcliveCurves, TsvCurves

ABSENT = ("submitit", "dvclive", "dvc")
# A None entry in sys.modules makes `import` raise ModuleNotFoundError and importlib.util.find_spec return None,
# as for a package that is not installed.
PRELUDE = f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None\n"


def python_without_them(code: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where submitit, dvclive and dvc cannot be imported, with `args` as sys.argv[1:]."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACDISTILL_DATA_DIR": str(MIRROR), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


CLI = "from acdistill.cli import app\napp(prog_name='acdistill')"


def test_every_module_imports_without_submitit_dvclive_or_dvc(tmp_path):
    done = python_without_them(
        "import importlib, pkgutil, acdistill\n"
        "names = [m.name for m in pkgutil.walk_packages(acdistill.__path__, 'acdistill.')"
        " if m.name != 'acdistill.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"print(len(names), sorted(k for k, m in sys.modules.items() if k.split('.')[0] in {ABSENT!r} and m))",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) > 40 and loaded.strip() == "[]"


def test_training_without_dvclive_writes_dvclives_files(tmp_path):
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    done = python_without_them(CLI, "fetch-teacher", "-S", "teacher.train.epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    live = tmp_path / "dvclive" / "teacher"
    series = read_dvclive_series(live)
    assert {"loss/total", "loss/ce_adv", "lr", "clean_acc"} <= set(series)
    assert [step for step, _ in series["loss/total"]] == [0, 1]
    assert (live / "plots/metrics/loss/total.tsv").read_text().splitlines()[0] == "step\ttotal"
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 1 and summary["loss"]["total"] == series["loss/total"][-1][1]


def test_the_writer_without_dvclive_writes_what_dvclive_writes(tmp_path):
    history = [
        {"epoch": 1, "lr": 0.1, "loss/nce": 2.5, "loss/ce": 1.25, "clean_acc": 31.0, "images_per_s": 512.25},
        {"epoch": 2, "lr": 0.05, "loss/nce": 2.0, "loss/ce": 1.0, "clean_acc": 40.5, "images_per_s": 498.0},
    ]
    for writer, where in ((DvcliveCurves, tmp_path / "dvclive"), (TsvCurves, tmp_path / "ours")):
        (where / "plots/metrics").mkdir(parents=True)
        (where / "plots/metrics/stale.tsv").write_text("step\tstale\n0\t1\n")  # an earlier run's curve
        curves = writer(where)
        for record in history:
            curves.log(record)
        curves.end()

    def files(root):
        return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}

    ours = files(tmp_path / "ours")
    assert ours == files(tmp_path / "dvclive")
    assert set(ours) == {"metrics.json", *(f"plots/metrics/{k}.tsv" for k in ("lr", "loss/nce", "loss/ce"))} | {
        "plots/metrics/clean_acc.tsv",
        "plots/metrics/images_per_s.tsv",
    }


def test_ablate_jobs_without_submitit_is_one_line_and_writes_nothing(tmp_path):
    args = ("ablate", "--jobs", "2", "-S", "ablate.points=[{distill.method: sat}]", "--runs", "runs", "--out")
    done = python_without_them(CLI, *args, "metrics/ablate.json", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "error: ablate.jobs > 1 and ablate.cluster: slurm run points through submitit, which is not installed: "
        "pip install 'acdistill[jobs]' (or run the points one at a time, jobs: 1)\n"
    )
    assert list(tmp_path.iterdir()) == []


def requirement(name: str) -> Requirement:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (found,) = [r for r in map(Requirement, dependencies) if r.name.lower() == name]
    return found


@pytest.mark.parametrize(
    "name, versions",
    [
        # the GPU node's own builds, and the versions this machine installs (Makefile)
        ("torch", ["2.11.0+cu130", "2.11.0", "2.14.1"]),
        ("torchvision", ["0.26.0+cu130", "0.26.0", "0.29.1"]),
        # 0.9.6.post1 is the one that travels (1.5 MB); 0.9.7.post1 bundles a 174 MB extension
        ("pot", ["0.9.6.post1", "0.9.7.post1"]),
    ],
)
def test_the_version_ranges_admit_the_gpu_node_and_this_machine(name, versions):
    specifier = requirement(name).specifier
    assert all(specifier.contains(v) for v in versions), (name, str(specifier))


def test_the_makefile_installs_torch_inside_the_range():
    makefile = (REPO / "Makefile").read_text()
    for name, pinned in (("torch", "2.14.1"), ("torchvision", "0.29.1")):
        assert f"{name}=={pinned}" in makefile and requirement(name).specifier.contains(pinned)


def bundle_tool(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools/airgap_bundle.py"), *args], cwd=cwd, capture_output=True, text=True
    )


def test_a_slimmed_wheel_lists_what_it_holds_and_pip_installs_it(tmp_path):
    spec = importlib.util.spec_from_file_location("airgap_bundle", REPO / "tools/airgap_bundle.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    files = {"pkg/__init__.py": b"x = 1\n", "pkg/examples/model.pt": b"\0" * 4096, "pkg-1.0.dist-info/WHEEL": WHEEL}
    files["pkg-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"

    def line(name, data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}\n"

    record = "".join(line(n, d) for n, d in files.items()) + "pkg-1.0.dist-info/RECORD,,\n"
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in {**files, "pkg-1.0.dist-info/RECORD": record.encode()}.items():
            z.writestr(name, data)
    tool.slim_wheel(wheel, "pkg/examples/")
    with zipfile.ZipFile(wheel) as z:
        assert "pkg/examples/model.pt" not in z.namelist() and "pkg/__init__.py" in z.namelist()
        assert "pkg/examples/" not in z.read("pkg-1.0.dist-info/RECORD").decode()
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(target)]
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (target / "pkg/__init__.py").is_file() and not (target / "pkg/examples").exists()


WHEEL = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def test_the_size_check_sums_checkout_wheels_and_data_and_refuses_over_the_limit(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "data").mkdir()
    (bundle / "wheels/pkg-1.0-py3-none-any.whl").write_bytes(b"\0" * 2**20)
    (bundle / "data/cifar10_device_pack.npz").write_bytes(b"\0" * 2**21)
    (bundle / "data/unpack_device_pack.py").write_text("")
    fits = bundle_tool("--check", str(bundle), cwd=tmp_path)
    assert fits.returncode == 0, fits.stderr
    checkout = float(fits.stdout.splitlines()[0].split()[1])
    assert "wheels: 1.00 MiB" in fits.stdout and "data: 2.00 MiB" in fits.stdout
    assert f"total: {checkout + 3:.2f} MiB of at most 64 MiB" in fits.stdout
    over = bundle_tool("--check", str(bundle), "--limit-mib", "3", cwd=tmp_path)
    assert over.returncode == 2
    assert over.stderr == f"error: checkout, wheels and data come to {checkout + 3:.2f} MiB, over the 3 MiB limit\n"


def test_a_data_directory_without_the_device_pack_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "data").mkdir()
    done = bundle_tool(str(tmp_path / "bundle"), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: no cifar10_device_pack.npz or unpack_device_pack.py in the data directory {tmp_path / 'data'} "
        "(--data-dir)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
