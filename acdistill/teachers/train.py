"""Source `train`: the teacher is trained here, with `teacher.train` (a method that needs no teacher itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acdistill.data import DATASETS
from acdistill.errors import AcdistillError
from acdistill.formats import normalization_values
from acdistill.methods import METHODS
from acdistill.models import ImageClassifier, create_model
from acdistill.teachers.base import TeacherSource, register_source

if TYPE_CHECKING:
    from acdistill.config import TeacherParams


def teacher_methods() -> list[str]:
    """The methods that train without a teacher, so can train one: read from the registry when asked, so that a
    method registered after import is among them."""
    return [name for name in METHODS.names() if not METHODS.get(name).needs_teacher]


@register_source
class Train(TeacherSource):
    name = "train"
    trains = True

    def open(self, t: TeacherParams, dataset: str, arch: str | None) -> tuple[ImageClassifier, dict[str, Any]]:
        """A fresh `arch` (default `teacher.arch`) with the dataset's normalization unless `teacher.normalize`
        says another."""
        if t.train.method not in teacher_methods():
            raise AcdistillError(
                f"teacher.train.method '{t.train.method}' needs a teacher itself; use {', '.join(teacher_methods())}"
            )
        mean, std = normalization_values(t.normalization() or "dataset", dataset)
        return create_model(arch or t.arch, num_classes=DATASETS.get(dataset).num_classes, mean=mean, std=std), {}
