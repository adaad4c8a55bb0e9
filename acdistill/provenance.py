"""Which acdistill code, and which machine, produced an artifact.

Params alone do not identify a result: ablate reuses a finished point whose params match, and the study once kept
two CRDND points trained before a change to CRDND's arithmetic (RESULTS.md, investigation 7). Every checkpoint
sidecar and ablate result records this, so that a result from other code is reported as such. The machine is
recorded too: the same code, data and params train other weights on another CPU (RESULTS.md, investigation 8).
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path

import torch

from acdistill._version import __version__

PACKAGE = Path(__file__).parent


# The modules that compute what a run trains and measures: the networks, the methods and their losses, the attacks,
# the trainer and the evaluation loop, the data and its batches, and the reading and building of checkpoints and
# teachers, with the stage bodies that put them together. Everything else (the params' validation, whose values
# fingerprints cover; ablate's planning, tables and jobs; the CLI, reports, figures, statistics, files and errors)
# schedules or presents results without computing them.
COMPUTES = (
    "attacks/",
    "data/",
    "engine/",
    "methods/",
    "models/",
    "budgets.py",
    "checkpoint.py",
    "distributed.py",
    "formats.py",
    "losses.py",
    "registry.py",
    "serialization.py",
    "teachers/",
    "untouched.py",
    "pipeline/common.py",
    "pipeline/training.py",
)


@functools.cache
def source_digest(package: Path = PACKAGE, *, results_only: bool = False) -> str:
    """sha256 (first 12 hex digits) over the package's .py files, by relative path: it changes with any edit to
    the code, installed or checked out, and with nothing else. `results_only`: over the modules that compute what a
    run trains and measures (COMPUTES) only."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if results_only and not name.startswith(COMPUTES):
            continue
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def code_info() -> dict[str, str]:
    """The version, the digest of all the code (`source`) and of the code that computes results (`results`)."""
    return {
        "version": __version__,
        "source": source_digest(),
        "results": source_digest(results_only=True),
    }


def cpu_name() -> str:
    """The CPU's model name: on Linux platform.processor() is empty and platform.machine() only says x86_64,
    which does not tell two CPUs apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


@functools.cache
def machine_info() -> dict[str, str | None]:
    """The CPU, the first visible GPU (None without CUDA) and the torch build."""
    return {
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
