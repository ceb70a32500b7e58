"""The one exception type a user sees as a sentence, and SIGTERM as an exception."""

from __future__ import annotations

import os
import signal


class ConfigError(ValueError):
    """A user-facing configuration problem; the CLI prints its message as one line and exits 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be (the command stops the same way)."""


class Interrupts:
    """The SIGINT and SIGTERM handler of a capcrawl command.

    The first signal raises KeyboardInterrupt (SIGTERM: :class:`Terminated`), and the command
    stops as after Ctrl-C, removing its temporary files. A second is ignored: it would land in
    that clean-up (leaving a temporary file, or aborting torch's worker threads). A third
    ends the process at once (exit 130; the next run removes what is left). A stop that came
    another way (the crawl's own handlers, :meth:`note`) counts as the first.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self.count >= 3:
            os._exit(130)

    def note(self) -> None:
        self.count = max(self.count, 1)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


#: The process's one handler (capcrawl.cli installs it).
INTERRUPTS = Interrupts()
