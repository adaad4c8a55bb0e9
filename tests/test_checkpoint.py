import builtins
import os
import shutil
import stat

import pytest
import torch

import acdistill
from acdistill import create_model, load_model, save_model
from acdistill.checkpoint import read_sidecar
from acdistill.errors import AcdistillError
from acdistill.formats import read_state_dict
from acdistill.provenance import code_info, machine_info, source_digest


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = create_model("small_cnn", num_classes=7, mean=0.5, std=0.25).eval()
    path = save_model(model, tmp_path / "m.safetensors", dataset="cifar10", info={"note": "x"})
    meta = read_sidecar(path)
    assert meta["arch"] == "small_cnn" and meta["num_classes"] == 7 and meta["mean"] == [0.5] * 3
    assert meta["code"] == code_info() and meta["code"]["version"] == acdistill.__version__
    assert meta["machine"] == machine_info() and meta["machine"]["torch"] == torch.__version__
    assert isinstance(meta["machine"]["cpu"], str) and meta["machine"]["cpu"]
    loaded = load_model(path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded(x), model(x)) and not loaded.training


def test_the_source_digest_follows_the_python_files_and_nothing_else(tmp_path):
    package = tmp_path / "a" / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "core.py").write_text("x = 1\n")
    (package / "sub" / "util.py").write_text("y = 2\n")
    copy = tmp_path / "b" / "pkg"
    shutil.copytree(package, copy)
    before = source_digest(package)
    assert source_digest(copy) == before  # the same code elsewhere on disk
    (copy / "README.txt").write_text("not code")
    assert source_digest.__wrapped__(copy) == before
    (copy / "sub" / "util.py").write_text("y = 3\n")
    assert source_digest.__wrapped__(copy) != before
    (package / "sub" / "util.py").rename(package / "sub" / "other.py")  # the same bytes as another module
    assert source_digest.__wrapped__(package) != before
    assert len(source_digest()) == 12 and source_digest() == code_info()["source"]


def test_the_results_digest_covers_the_code_that_computes_results_and_no_other(tmp_path):
    package = tmp_path / "pkg"
    for name in (
        "engine/trainer.py",
        "cli/main.py",
        "pipeline/report.py",
        "pipeline/ablate.py",
        "config.py",
        "stats.py",
    ):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("x = 1\n")
    before = source_digest.__wrapped__(package, results_only=True)
    for name in ("cli/main.py", "pipeline/report.py", "pipeline/ablate.py", "config.py", "stats.py"):
        (package / name).write_text("x = 2\n")
    assert source_digest.__wrapped__(package, results_only=True) == before
    (package / "engine/trainer.py").write_text("x = 2\n")
    assert source_digest.__wrapped__(package, results_only=True) != before
    assert code_info()["results"] == source_digest(results_only=True) != code_info()["source"]


def test_changed_weights_are_caught(tmp_path):
    path = save_model(create_model("small_cnn"), tmp_path / "m.safetensors", dataset="cifar10")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AcdistillError, match="sha256 does not match its sidecar"):
        load_model(path)


def test_missing_or_corrupted_sidecar(tmp_path):
    path = save_model(create_model("small_cnn"), tmp_path / "m.safetensors", dataset="cifar10")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(AcdistillError, match="corrupted sidecar"):
        load_model(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(AcdistillError, match="no sidecar"):
        load_model(path)


class Payload:
    """Unpickling this calls open(marker, 'w'): proof that code in a checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": Payload(marker)}, path)
    with pytest.raises(AcdistillError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_wrapper_prefix_and_container_are_unwrapped(tmp_path):
    state = create_model("small_cnn").state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.pt")
    loaded, _ = read_state_dict(tmp_path / "w.pt")
    assert set(loaded) == set(state)


def test_written_checkpoints_follow_the_umask(tmp_path):
    """mkstemp makes 0600 files and safetensors replaces the file it is given: both files still get 0666 & ~umask."""
    old = os.umask(0o022)
    try:
        path = save_model(create_model("small_cnn"), tmp_path / "m.safetensors", dataset="cifar10")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == 0o644
