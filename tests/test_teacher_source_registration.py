"""A teacher source added in one registration: defined here, as a module of acdistill/teachers/ would add it (a lab's
model store: `teacher.store: {root, name}` names <root>/<name>.safetensors), it validates its own section, gives
fetch-teacher the teacher and the record its sidecar keeps, and distill learns from it, with no other file changed."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import MIRROR, REPO, run
from pydantic import BaseModel, ConfigDict

from acdistill import create_model, load_model, save_model
from acdistill.checkpoint import sha256_file
from acdistill.errors import AcdistillError
from acdistill.teachers import TEACHER_SOURCES, TeacherSource, register_source


class StoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str
    name: str


class Store(TeacherSource):
    name = "store"
    Params = StoreParams

    def check(self, t):
        if t.section("store") is None:
            raise ValueError("source 'store' needs 'store: {root: ..., name: ...}'")

    def open(self, t, dataset, arch):
        store = t.section("store")
        path = Path(store.root) / f"{store.name}.safetensors"
        if not path.is_file():
            raise AcdistillError(f"no model {store.name} in the store {store.root} (expected {path})")
        record = {"source": self.name, "store": store.model_dump(), "file": str(path), "file_sha256": sha256_file(path)}
        return load_model(path).eval(), record | {"format": "acdistill checkpoint", "expected_clean_acc": None}


@pytest.fixture
def store(monkeypatch, tmp_path):
    monkeypatch.setattr(TEACHER_SOURCES, "_items", dict(TEACHER_SOURCES._items))  # registered for this test alone
    register_source(Store)
    root = tmp_path / "store"
    save_model(create_model("small_cnn", num_classes=10), root / "lab1.safetensors", dataset="cifar10")
    return root


def test_a_registered_source_fetches_a_teacher_that_distill_learns_from(store, tmp_path, monkeypatch):
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    shelf = ["--source", "store", "-S", f"teacher.store.root={store}"]
    run("fetch-teacher", *shelf, "-S", "teacher.store.name=lab1")
    sidecar = json.loads((tmp_path / "models/teacher.json").read_text())
    assert sidecar["info"]["source"] == "store" and sidecar["info"]["store"] == {"root": str(store), "name": "lab1"}
    assert sidecar["info"]["file_sha256"] == sha256_file(store / "lab1.safetensors") and sidecar["info"]["clean_acc_n"]
    teacher = load_model(tmp_path / "models/teacher.safetensors")
    stored = load_model(store / "lab1.safetensors")
    assert all((teacher.state_dict()[k] == v).all() for k, v in stored.state_dict().items())
    run("distill", "--method", "kd")
    student = json.loads((tmp_path / "models/student.json").read_text())
    assert student["info"]["teacher_sha256"] == sidecar["sha256"]

    # its own section is validated, its errors are one line, and a missing model writes nothing
    assert (
        "-S teacher.store.nam=x: teacher: store.nam: unknown key; did you mean name?"
        in run("fetch-teacher", *shelf, "-S", "teacher.store.nam=x", ok=False).output
    )
    assert "source 'store' needs" in run("fetch-teacher", "--source", "store", ok=False).output
    missing = run("fetch-teacher", *shelf, "-S", "teacher.store.name=lab2", "--out", "models/t2.safetensors", ok=False)
    assert "no model lab2 in the store" in missing.output and not (tmp_path / "models/t2.safetensors").exists()


def test_without_the_registration_the_source_is_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run("fetch-teacher", "--source", "store", ok=False).output
    assert "unknown teacher source 'store'; choose from: file, robustbench, train, url" in out
