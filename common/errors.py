"""The one exception type a user sees as a sentence, and SIGTERM as an exception."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration problem; the CLI prints its message as one line and exits 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be (the command stops the same way)."""


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: :class:`Terminated`."""
    raise Terminated()
