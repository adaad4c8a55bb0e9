"""The one exception type for mistakes a user can make."""


class AcdistillError(ValueError):
    """A user-facing error: the CLI prints its message as one line and exits with code 2, no traceback.

    A ValueError so that pydantic validators may raise it and the message keeps the offending key's location."""
