"""Source `url`: a checkpoint file downloaded once into a cache keyed by its sha256, then read as source `file`."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdistill.errors import AcdistillError, key_error
from acdistill.io import atomic_path
from acdistill.models import ImageClassifier
from acdistill.teachers.base import TeacherSource, register_source
from acdistill.teachers.file import open_file

if TYPE_CHECKING:
    from acdistill.config import TeacherParams

CACHE_DIR = Path(os.environ.get("ACDISTILL_CACHE", Path.home() / ".cache" / "acdistill"))


def download(url: str, sha256: str) -> Path:
    """Fetch `url` into a cache keyed by its sha256; the file appears only once its hash is verified."""
    sha256 = sha256.lower()
    target = CACHE_DIR / sha256 / Path(url.split("?")[0]).name
    if target.is_file():
        return target
    digest = hashlib.sha256()
    received = 0
    with atomic_path(target, claim=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                expected = response.headers.get("Content-Length")
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise AcdistillError(f"download of {url} failed ({e.__class__.__name__}: {e})") from None
        if expected is not None and expected.isdigit() and received != int(expected):
            raise AcdistillError(f"download of {url} was cut off: {received} of {expected} bytes; nothing was kept")
        if digest.hexdigest() != sha256:
            raise AcdistillError(
                f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; nothing was kept"
            )
    return target


@register_source
class Url(TeacherSource):
    name = "url"

    def check(self, t: TeacherParams) -> None:
        if not (t.url and t.sha256):
            raise key_error("source", "source 'url' needs 'url' and 'sha256'")

    def open(self, t: TeacherParams, dataset: str, arch: str | None) -> tuple[ImageClassifier, dict[str, Any]]:
        model, record = open_file(t, download(t.url, t.sha256), dataset, arch, self.name)
        return model, record | {"url": t.url}
