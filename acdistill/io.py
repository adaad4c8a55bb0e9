"""Crash-safe file writing: a reader never sees a half-written checkpoint or metrics file. Output locks: two runs
never write to the same directory at once, and a refused run creates nothing."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from acdistill.errors import AcdistillError


@contextmanager
def atomic_path(path: str | os.PathLike, *, claim: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`, else delete it, and the
    directories made for it. The running command claims its declared outputs first (`claim_outputs`), unless
    `claim` is false: a download into a cache is not one of its outputs."""
    if claim:
        claim_outputs()
    target = Path(path)
    made = [d for d in [target.parent, *target.parent.parents] if not d.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600 files, and a writer may replace the file it was given (safetensors does): the result
        # gets the mode the umask gives any new file
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
        if not target.exists():
            for directory in made:  # deepest first; one that now holds something else stays
                try:
                    directory.rmdir()
                except OSError:
                    break


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


LOCK_NAME = ".acdistill.lock"
_held_locks: dict[Path, list] = {}  # directory -> [open lock file, depth]: nested locks in one process are fine


@contextmanager
def output_lock(*files: str | os.PathLike, dirs: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Hold an exclusive lock on the directory of each file, and on each of `dirs`, while a run writes there:
    a second run (another process) aiming at the same directory refuses at once. These are flock locks, which
    the kernel drops when their process dies, so a killed run never leaves a stale lock behind."""
    taken = []
    try:
        for directory in sorted({Path(f).resolve().parent for f in files} | {Path(d).resolve() for d in dirs}):
            if directory in _held_locks:
                _held_locks[directory][1] += 1
                taken.append(directory)
                continue
            try:  # an output directory that cannot be written is found now, not after hours of training
                directory.mkdir(parents=True, exist_ok=True)
                handle = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 - held open as the lock until released
            except OSError as e:
                raise AcdistillError(f"cannot write to {directory}: {e.strerror}") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise AcdistillError(
                    f"{directory} is in use by another acdistill run ({holder}); wait for it to "
                    f"finish, or write elsewhere"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}: {' '.join(['acdistill', *sys.argv[1:]])[:200]}\n")
            handle.flush()
            _held_locks[directory] = [handle, 1]
            taken.append(directory)
        yield
    finally:
        for directory in taken:
            entry = _held_locks[directory]
            entry[1] -= 1
            if entry[1] == 0:
                del _held_locks[directory]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                entry[0].close()


@dataclass
class _Declared:
    files: tuple[str | os.PathLike, ...]
    dirs: tuple[str | os.PathLike, ...]
    locks: ExitStack = field(default_factory=ExitStack)
    claimed: bool = False


_declared: ContextVar[_Declared | None] = ContextVar("declared_outputs", default=None)


@contextmanager
def declared_outputs(*files: str | os.PathLike, dirs: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Declare what a command writes; `claim_outputs` locks it (`output_lock`), and the lock is released on exit.

    The lock is not taken here: a command first validates its params and output paths, so that a command refused
    for them leaves nothing behind (no directory, no lock file). It claims its outputs once they are valid, before
    the long work, or at the latest the first atomic write (`atomic_path`) claims them.
    """
    declared = _Declared(files, tuple(dirs))
    token = _declared.set(declared)
    try:
        with declared.locks:
            yield
    finally:
        _declared.reset(token)


def claim_outputs() -> None:
    """Lock the outputs the running command declared (once; nothing to do outside `declared_outputs`)."""
    declared = _declared.get()
    if declared is not None and not declared.claimed:
        declared.locks.enter_context(output_lock(*declared.files, dirs=declared.dirs))
        declared.claimed = True
