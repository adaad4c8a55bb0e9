"""The one exception type for mistakes a user can make, and the one-line warning."""

import os
import sys


def on_first_process() -> bool:
    """False in torchrun's processes other than rank 0 (RANK, as torchrun sets it): they would repeat every message,
    and only rank 0 writes files."""
    return os.environ.get("RANK", "0") == "0"


class AcdistillError(ValueError):
    """A user-facing error: the CLI prints its message as one line and exits with code 2, no traceback.

    A ValueError so that pydantic validators may raise it and the message keeps the offending key's location."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, saying what it kept (e.g. the last saved epoch): the CLI prints the message as one line
    and exits with code 130, as a shell does for SIGINT."""


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr, as the CLI prints them (once under torchrun). The one warning
    channel of acdistill."""
    if on_first_process():
        print(f"warning: {message}", file=sys.stderr, flush=True)
