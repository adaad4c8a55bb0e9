"""Crash-safe file writing: a reader never sees a half-written checkpoint or metrics file. Output locks: two runs
never write the same output at once, and a refused run creates nothing."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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


_held_locks: dict[Path, list] = {}  # lock file -> [open lock file, depth]: nested locks in one process are fine


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of one output (a file or a directory): `.<name>.lock` beside it."""
    path = Path(output).resolve()
    return path.with_name(f".{path.name}.lock")


def _acquire(lock: Path, output: Path) -> object:
    """An flock on `lock`, created for it; refused at once when another process holds it. The file is unlinked at
    release, so a waiter may have opened the old inode: it retries until the lock it holds is the file on disk."""
    while True:
        try:  # an output directory that cannot be written is found now, not after hours of training
            lock.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a+")  # noqa: SIM115 - held open as the lock until released
        except OSError as e:
            raise AcdistillError(f"cannot write to {lock.parent}: {e.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AcdistillError(
                f"{output} is being written by another acdistill run ({holder}); wait for it to finish, or write "
                "elsewhere"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


@contextmanager
def output_lock(*outputs: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on each output (a file, or a directory a run fills) while a run writes it: a second
    run (another process) that would write the same output refuses at once, naming it and the first run; runs
    with different outputs go ahead side by side. The locks are flock locks on `.<name>.lock` files beside the
    outputs: the kernel drops them when their process dies, and a run that ends removes its lock files."""
    taken, made = [], []
    try:
        for output in sorted({Path(o).resolve() for o in outputs}):
            lock = lock_path(output)
            if lock in _held_locks:
                _held_locks[lock][1] += 1
                taken.append(lock)
                continue
            made += [d for d in [lock.parent, *lock.parent.parents] if not d.exists()][::-1]
            handle = _acquire(lock, output)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}: {' '.join(['acdistill', *sys.argv[1:]])[:200]}\n")
            handle.flush()
            _held_locks[lock] = [handle, 1]
            taken.append(lock)
        yield
    finally:
        for lock in taken:
            entry = _held_locks[lock]
            entry[1] -= 1
            if entry[1] == 0:
                del _held_locks[lock]
                lock.unlink(missing_ok=True)  # while still held: a waiter that opened it retries on a new file
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                entry[0].close()
        for directory in reversed(made):  # made for a lock alone (a refused run's): removed unless filled since
            with suppress(OSError):
                directory.rmdir()


@dataclass
class _Declared:
    outputs: tuple[str | os.PathLike, ...]
    locks: ExitStack = field(default_factory=ExitStack)
    claimed: bool = False


_declared: ContextVar[_Declared | None] = ContextVar("declared_outputs", default=None)


@contextmanager
def declared_outputs(*outputs: str | os.PathLike) -> Iterator[None]:
    """Declare what a command writes; `claim_outputs` locks it (`output_lock`), and the lock is released on exit.

    The lock is not taken here: a command first validates its params and output paths, so that a command refused
    for them leaves nothing behind (no directory, no lock file). It claims its outputs once they are valid, before
    the long work, or at the latest the first atomic write (`atomic_path`) claims them.
    """
    declared = _Declared(outputs)
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
        declared.locks.enter_context(output_lock(*declared.outputs))
        declared.claimed = True
