"""A dataset added in one registration: defined here, as a registration in acdistill/data/ would add it, its 64x64
images train a teacher, distill a student and evaluate through the CLI, with no other file changed."""

import json
import shutil

import numpy as np
import pytest
from conftest import MIRROR, REPO, run

from acdistill.data import DATASETS, DatasetSpec, load_split, register_dataset

CLASSES = ("red", "green", "blue", "grey")


def synthetic_64(root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of 64x64 noise, each with a brighter channel (grey: none): learnable in one epoch."""
    rng = np.random.default_rng(0 if train else 1)
    n = 128 if train else 64
    labels = rng.integers(0, len(CLASSES), n)
    images = rng.integers(0, 128, (n, 64, 64, 3), dtype=np.uint8)
    for c in range(3):
        images[labels == c, :, :, c] += 127
    return images, labels


@pytest.fixture
def synth64(monkeypatch):
    spec = DatasetSpec("synth64", 4, synthetic_64, mean=(0.4,), std=(0.25,), image_size=64, class_names=CLASSES)
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))  # registered for this test alone
    register_dataset(spec)
    return spec


def test_a_registered_64x64_dataset_trains_distills_and_evaluates_through_the_cli(synth64, tmp_path, monkeypatch):
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))  # holds no synth64 file: its loader is used
    on = ["-S", "data.dataset=synth64", "-S", "data.train_subset=null", "-S", "data.test_subset=null"]
    run("fetch-teacher", *on, "-S", "teacher.train.epochs=2")
    run("distill", *on, "--method", "kd")
    run(
        "attack-eval",
        *on,
        "--model",
        "models/student.safetensors",
        "--attacks",
        "natural,pgd20",
        "--out",
        "metrics/eval_student.json",
    )
    student = json.loads((tmp_path / "models/student.json").read_text())
    assert student["arch_kwargs"]["num_classes"] == 4 and student["arch_kwargs"]["mean"] == [0.4] * 3
    result = json.loads((tmp_path / "metrics/eval_student.json").read_text())
    assert set(result) >= {"natural", "pgd20"} and 0 <= result["pgd20"]["accuracy"] <= result["natural"]["accuracy"]
    details = json.loads((tmp_path / "metrics/eval_student_details.json").read_text())
    assert details["natural"]["n"] == 32  # tiny_params' eval.n
    assert student["info"]["train_images"] == 128  # the whole split
    test = load_split("synth64", False)
    assert tuple(test.images.shape) == (64, 3, 64, 64)  # kept at its size, not resized to 32


def test_images_of_a_size_the_registration_does_not_name_are_refused(synth64):
    spec = DatasetSpec(
        "synth48", 4, lambda root, train: (np.zeros((2, 48, 48, 3), np.uint8), np.zeros(2)), (0.5,), (0.2,)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DATASETS._items, "synth48", spec)
        with pytest.raises(Exception, match=r"synth48 images are 48x48, but its registration reads 32 pixels"):
            load_split("synth48", True)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registration_is_whole(name):
    spec = DATASETS.get(name)
    assert len(spec.names_of_classes()) == spec.num_classes
    assert len(spec.mean) in (1, 3) and len(spec.std) in (1, 3) and all(s > 0 for s in spec.std)
    assert spec.source_size is None or spec.source_size != spec.image_size
