"""Source `file`: a checkpoint on disk, an acdistill checkpoint (with its sidecar) or a released file in one of the
layouts of `acdistill.formats`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdistill.checkpoint import load_model, sidecar_path
from acdistill.errors import key_error
from acdistill.formats import OWN, build, detect, read_released
from acdistill.models import ImageClassifier
from acdistill.teachers.base import TeacherSource, file_digest, register_source

if TYPE_CHECKING:
    from acdistill.config import TeacherParams


def open_file(
    t: TeacherParams, path: Path, dataset: str, arch: str | None, source: str
) -> tuple[ImageClassifier, dict[str, Any]]:
    """The network in the weights file at `path`, read with `teacher.format`, `.normalize` and `.checkpoint_key`.
    `t.arch` is read only for a bare state dict in acdistill's layout: a sidecar and the released layouts name their
    own architecture."""
    digest = file_digest(path, t.sha256)
    record = {"source": source, "file": str(path), "file_sha256": digest}
    stated = {"expected_clean_acc": t.expected_clean_acc}
    if sidecar_path(path).is_file() and path.suffix == ".safetensors":
        model = load_model(
            path,
            arch=arch,
            format=t.format,
            normalize=t.normalization(),
            dataset=dataset,
            checkpoint_key=t.checkpoint_key,
        )
        return model, record | {"format": "acdistill checkpoint"} | stated
    raw = read_released(path, t.checkpoint_key)
    fmt = detect(raw, t.format)
    released = build(
        raw, fmt, arch=arch or (t.arch if fmt.name == OWN else None), normalize=t.normalization(), dataset=dataset
    )
    return released.model, record | {
        "format": released.format,
        "container": released.container,
        "normalization": released.normalization,
    } | stated


@register_source
class File(TeacherSource):
    name = "file"

    def check(self, t: TeacherParams) -> None:
        if not t.path:
            raise key_error("source", "source 'file' needs 'path'")

    def open(self, t: TeacherParams, dataset: str, arch: str | None) -> tuple[ImageClassifier, dict[str, Any]]:
        return open_file(t, Path(t.path), dataset, arch, self.name)
