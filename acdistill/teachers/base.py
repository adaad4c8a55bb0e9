"""The TeacherSource interface: how one value of `teacher.source` is checked, resolved to a network, and recorded.

The fetch-teacher stage (`acdistill.pipeline.training.fetch_teacher`) asks the registered source for the teacher:
a source that `trains` gives a fresh network that the stage trains with `teacher.train`; any other gives a trained
one, whose clean accuracy the stage checks before it writes the checkpoint with the source's record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from acdistill.checkpoint import sha256_file
from acdistill.errors import AcdistillError
from acdistill.models import ImageClassifier
from acdistill.registry import Registry

if TYPE_CHECKING:  # the params validate `teacher.source` against this registry, so they import it, not the reverse
    from acdistill.config import TeacherParams


class TeacherSource:
    """One value of `teacher.source`. A subclass sets `name` (and registers with `@register_source`), may set
    `Params` (a pydantic model for its own section, `teacher.<name>`, with unknown keys refused) and `trains`, and
    implements `open`; `check` refuses the shared teacher keys it needs and lacks, or that do not apply to it."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel] | None] = None
    trains: ClassVar[bool] = False

    def check(self, t: TeacherParams) -> None:
        """Called when the params are validated. Raises ValueError (one line) for a missing or inapplicable key:
        `acdistill.errors.key_error(key, text)` names the key, so that the error blames the option that set it."""

    def open(self, t: TeacherParams, dataset: str, arch: str | None) -> tuple[ImageClassifier, dict[str, Any]]:
        """The teacher and what its sidecar records of where it came from (an empty record for a source that
        `trains`). The network is on the CPU, in eval mode when trained. `arch`: an architecture the caller named
        (--arch), which the teacher must have. Raises AcdistillError (one line) when the teacher cannot be had.

        The record is the source's own; the stage reads these keys of it where present: `source`, `file` and
        `format` (shown in its report line), `file_sha256`, and `expected_clean_acc` (percent, the accuracy the
        source states, which the stage's check compares)."""
        raise NotImplementedError


TEACHER_SOURCES: Registry[TeacherSource] = Registry("teacher source")


def register_source(cls: type[TeacherSource]) -> type[TeacherSource]:
    TEACHER_SOURCES.register(cls.name)(cls())
    return cls


def file_digest(path: Path, expected: str | None) -> str:
    """The sha256 (hex) of the weights file at `path`, which must match `teacher.sha256` when that is given."""
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    digest = sha256_file(path)
    if expected and digest != expected.lower():
        raise AcdistillError(f"{path}: sha256 {digest} does not match teacher.sha256 {expected}")
    return digest
