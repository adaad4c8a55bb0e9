"""Progress of long loops on stderr: on a terminal, rich bars with their rate and ETA; elsewhere (CI, dvc, Slurm, a
log file) a plain line when a task starts and then at most every ACDISTILL_PROGRESS_SECONDS seconds (default 30),
so that a run under `dvc repro` is never silent for minutes.

One display serves a whole process: nested loops (an ablation's points, each point's epochs, then its attacks)
share it, as rich allows one live display at a time. Under torchrun only rank 0 shows progress.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from acdistill.errors import AcdistillError, on_first_process

INTERVAL_ENV = "ACDISTILL_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0

console = Console(stderr=True)


def line_interval() -> float:
    """Seconds between two progress lines of one task off a terminal: $ACDISTILL_PROGRESS_SECONDS, else 30."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # also NaN
        raise AcdistillError(f"{INTERVAL_ENV}={text!r}: give the seconds between progress lines, a number >= 0")
    return seconds


def duration_text(seconds: float) -> str:
    """3 s, 4m10s, 2h05m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_text(per_second: float) -> str:
    """610, 41.5, 3.25: three significant digits, never an exponent."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}"


@dataclass
class Task:
    """One loop: `done` of `total` items (`unit`), with a note (e.g. the epoch) shown beside it."""

    name: str
    total: int
    unit: str
    display: Display
    done: int = 0
    note: str = ""
    started: float = field(default_factory=time.monotonic)
    last_line: float = -math.inf
    bar_id: int | None = None

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        self.display.show(self)

    def line(self, now: float) -> str:
        """`distill: 76/256 batches (epoch 3/8), 4.1 batches/s, ETA 44s`."""
        text = f"{self.name}: {self.done}/{self.total} {self.unit}"
        if self.note:
            text += f" ({self.note})"
        elapsed = now - self.started
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate_text(rate)} {self.unit}/s, ETA {duration_text(max(self.total - self.done, 0) / rate)}"
        return text


class Display:
    """The process's progress display (`display()` gives it); a task lives from `task` to `close`."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.terminal = console.is_terminal
        self.interval = line_interval()
        self.tasks: list[Task] = []
        self.bars = (
            RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
                transient=True,
            )
            if enabled and self.terminal
            else None
        )

    def task(self, name: str, total: int, unit: str = "images") -> Task:
        task = Task(name, total, unit, self)
        self.tasks.append(task)
        if self.bars is not None:
            if len(self.tasks) == 1:
                self.bars.start()
            task.bar_id = self.bars.add_task(name, total=total, unit=unit, rate="", note="")
        self.show(task)
        return task

    def show(self, task: Task) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.bars is not None:
            elapsed = now - task.started
            rate = f"{rate_text(task.done / elapsed)}/s" if task.done and elapsed > 0 else ""
            self.bars.update(task.bar_id, completed=task.done, rate=rate, note=task.note)
        elif now - task.last_line >= self.interval:
            task.last_line = now
            print(task.line(now), file=console.file, flush=True)

    def close(self, task: Task) -> None:
        if task not in self.tasks:
            return
        self.tasks.remove(task)
        if self.bars is not None:
            self.bars.remove_task(task.bar_id)
            if not self.tasks:
                self.bars.stop()

    def note(self, text: str) -> None:
        """Show `text` beside the innermost running task (AutoAttack's stage, say), if there is one."""
        if self.tasks:
            self.tasks[-1].advance(0, text)


_current: list[Display] = []


@contextmanager
def display() -> Iterator[Display]:
    """The process's display, opened by the outermost caller and shared by every loop inside it."""
    if _current:
        yield _current[0]
        return
    shown = Display(enabled=on_first_process())
    _current.append(shown)
    try:
        yield shown
    finally:
        _current.clear()
        for task in list(shown.tasks):
            shown.close(task)


@contextmanager
def task(name: str, total: int, unit: str = "images") -> Iterator[Task]:
    """A loop's entry in the process's display, from start to end."""
    with display() as shown:
        entry = shown.task(name, total, unit)
        try:
            yield entry
        finally:
            shown.close(entry)


def note(text: str) -> None:
    """`Display.note` on the open display; nothing when none is open."""
    if _current:
        _current[0].note(text)


class Callback:
    """The `progress(name, n, total)` callback of acdistill.engine.evaluate: a task per name, started on its first
    call (evaluate makes it, with n = 0, once the inputs are checked), advanced by `n` images, closed when done."""

    def __init__(self, shown: Display):
        self.shown = shown
        self.open: dict[str, Task] = {}

    def __call__(self, name: str, n: int, total: int) -> None:
        if name not in self.open:
            self.open[name] = self.shown.task(name, total)
        entry = self.open[name]
        if n:
            entry.advance(n)
        if entry.done >= entry.total:
            self.shown.close(self.open.pop(name))


@contextmanager
def callback() -> Iterator[Callback]:
    """A `Callback` on the process's display, its unfinished tasks closed at the end."""
    with display() as shown:
        calls = Callback(shown)
        try:
            yield calls
        finally:
            for entry in calls.open.values():
                shown.close(entry)
