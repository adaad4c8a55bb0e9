"""Crash-safe file writing: a reader never sees a half-written checkpoint or metrics file. Output locks: two runs
never write the same output at once, and a refused run creates nothing."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from acdistill.errors import AcdistillError


@dataclass
class _Staged:
    """A temporary file beside `target`, and the directories made for it (deepest first)."""

    target: Path
    tmp: Path
    made: list[Path]

    @classmethod
    def beside(cls, target: Path) -> _Staged:
        made = [d for d in [target.parent, *target.parent.parents] if not d.exists()]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
        except OSError as e:
            raise AcdistillError(f"cannot write {target}: {e.strerror}") from None
        os.close(fd)
        return cls(target, Path(tmp), made)

    def seal(self) -> None:
        """fsync, and the mode the umask gives any new file: mkstemp makes 0600 files."""
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        if not self.target.exists():
            for directory in self.made:  # deepest first; one that now holds something else stays
                try:
                    directory.rmdir()
                except OSError:
                    break


TMP_SUFFIX = ".tmp"
COMMIT_SUFFIX = ".commit"


@contextmanager
def atomic_path(path: str | os.PathLike, *, claim: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that needs a path (a downloader); on success fsync it and
    rename it over `path`, else delete it, and the directories made for it. The running command claims its
    declared outputs first (`claim_outputs`), unless `claim` is false: a download into a cache is not one of its
    outputs. Contents in memory go through `write_files`."""
    if claim:
        claim_outputs()
    staged = _Staged.beside(Path(path))
    try:
        yield staged.tmp
        staged.seal()
        os.replace(staged.tmp, staged.target)
    finally:
        staged.discard()


def commit_path(first: str | os.PathLike) -> Path:
    """The commit record of a group of files `write_files` replaces together, named after the group's first file."""
    first = Path(first)
    return first.with_name(f".{first.name}{COMMIT_SUFFIX}")


def write_files(files: Mapping[str | os.PathLike, bytes | str]) -> None:
    """Write each file (path -> contents), all of them or none, crash-safe: a reader that `settle`s the first path
    (as `acdistill.checkpoint.read_sidecar` does for a checkpoint's weights and sidecar) sees the old files or the
    new ones, never a mix, even after a SIGKILL at any moment.

    Each file is written beside its target under a temporary name and fsynced. For more than one file, a commit
    record (`commit_path`, listing the renames) is then written atomically: that is the moment the new group
    replaces the old. Then each temporary file is renamed over its target and the record removed; a run killed
    before that leaves the record, and the next `settle` finishes the renames. A write that fails (no space, a
    file-size limit, no permission) raises AcdistillError naming the file and the cause, and leaves the old files
    and no temporary file. The running command's declared outputs are claimed first (`claim_outputs`)."""
    claim_outputs()
    targets = [Path(p) for p in files]
    for target in targets:
        settle(target, clean=True)
    staged: list[_Staged] = []
    committed = False
    try:
        for target, contents in zip(targets, files.values(), strict=True):
            staged.append(_Staged.beside(target))
            _write_sealed(staged[-1], contents.encode() if isinstance(contents, str) else contents)
        if len(staged) > 1:
            record = _Staged.beside(commit_path(targets[0]))
            renames = [[s.tmp.name, os.path.relpath(s.target, record.target.parent)] for s in staged]
            try:
                _write_sealed(record, (json.dumps(renames) + "\n").encode())
                os.replace(record.tmp, record.target)
            finally:
                record.discard()
            committed = True
        for s in staged:
            os.replace(s.tmp, s.target)
        if committed:
            commit_path(targets[0]).unlink()
    finally:
        if not committed:
            for s in reversed(staged):
                s.discard()


def _write_sealed(staged: _Staged, data: bytes) -> None:
    try:
        with open(staged.tmp, "wb") as f:
            f.write(data)
        staged.seal()
    except OSError as e:
        raise AcdistillError(f"cannot write {staged.target}: {e.strerror}") from None


def settle(first: str | os.PathLike, *, clean: bool = False) -> None:
    """Finish a group of renames that `write_files` committed and did not end (its run was killed), so that the
    group's files are the new ones. With `clean` (a writer, under its output lock), also remove the temporary
    files that killed writers left beside `first`."""
    first = Path(first)
    record = commit_path(first)
    if record.is_file():
        try:
            renames = json.loads(record.read_text())
            for tmp, target in renames:
                with suppress(FileNotFoundError):  # renamed already, by the writer or by another reader
                    os.replace(record.parent / tmp, record.parent / target)
            record.unlink(missing_ok=True)
        except (OSError, ValueError) as e:
            raise AcdistillError(f"cannot finish the interrupted write recorded in {record}: {e}") from None
    if clean and first.parent.is_dir():
        for name in (first.name, record.name):
            for stray in first.parent.glob(f".{glob.escape(name)}.*{TMP_SUFFIX}"):
                stray.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_files({path: text})


def write_json(path: str | os.PathLike, data: object) -> None:
    write_text(path, json_text(data))


def json_text(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


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
