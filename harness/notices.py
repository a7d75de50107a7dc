"""Notices: what the library tells its user while it works (waiting for a device, pausing for
another process's measurement, a worker that failed), through the standard ``logging`` module.

Nothing below the CLI prints. The CLI shows each notice as one ``harness: ...`` line on stderr;
a Python caller sees them through its own logging set-up, or on stderr by logging's default.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("harness")


def notice(message: str) -> None:
    LOGGER.warning(message)


class _CommandLineHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (tests and callers may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"harness: {record.getMessage()}", file=sys.stderr, flush=True)


def show_notices_on_stderr() -> None:
    """Route notices to stderr as ``harness: ...`` lines, once per process (the CLI's)."""
    if not any(isinstance(handler, _CommandLineHandler) for handler in LOGGER.handlers):
        LOGGER.addHandler(_CommandLineHandler())
