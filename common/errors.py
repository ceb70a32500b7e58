"""The one exception type a user sees as a sentence."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration problem; the CLI prints its message as one line and exits 2."""
