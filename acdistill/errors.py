"""The one exception type for mistakes a user can make, and the one-line warning."""

import difflib
import os
import sys

from pydantic_core import PydanticCustomError


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


def key_error(key: str, text: str) -> PydanticCustomError:
    """A params validator's error about one key of its section (`key`, dotted below the section): the error line
    then blames the option that set that key, not another one of the section."""
    return PydanticCustomError("section_key", "{text}", {"text": text, "key": key})


def close_names(name: str, choices: list[str], cutoff: float = 0.6) -> list[str]:
    """The choices a typo of them could be (up to three, closest first, similarity at least `cutoff`): 'rsald' ->
    ['rslad']."""
    return difflib.get_close_matches(name, choices, n=3, cutoff=cutoff)


def unknown_name(kind: str, name: str, choices: list[str]) -> str:
    """The one message for a name that is not among `choices`: the close names first, then every choice.
    "unknown method 'rsald'; did you mean rslad? choose from: ard, crdnd, ..."."""
    close = close_names(name, choices)
    guess = f"; did you mean {' or '.join(close)}?" if close else ";"
    return f"unknown {kind} '{name}'{guess} choose from: {', '.join(choices)}"


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr, as the CLI prints them (once under torchrun). The one warning
    channel of acdistill."""
    if on_first_process():
        print(f"warning: {message}", file=sys.stderr, flush=True)
