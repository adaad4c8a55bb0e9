"""The one exception type for mistakes a user can make, and the one-line warning."""

import sys


class AcdistillError(ValueError):
    """A user-facing error: the CLI prints its message as one line and exits with code 2, no traceback.

    A ValueError so that pydantic validators may raise it and the message keeps the offending key's location."""


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr, as the CLI prints them. The one warning channel of acdistill."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
