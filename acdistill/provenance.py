"""Which acdistill code produced an artifact: the package version and a digest of its source files.

Params alone do not identify a result: ablate reuses a finished point whose params match, and the study once kept
two CRDND points trained before a change to CRDND's arithmetic (RESULTS.md, investigation 7). Every checkpoint
sidecar and ablate result records this, so that a result from other code is reported as such.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import acdistill

PACKAGE = Path(acdistill.__file__).parent


@functools.cache
def source_digest(package: Path = PACKAGE) -> str:
    """sha256 (first 12 hex digits) over the package's .py files, by relative path: it changes with any edit to
    the code, installed or checked out, and with nothing else."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def code_info() -> dict[str, str]:
    return {"version": acdistill.__version__, "source": source_digest()}
