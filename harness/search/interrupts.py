"""Ctrl-C during a search: the first finishes the trial in flight (a graceful stop), a second stops
at once; either way every finished trial stays recorded."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import optuna

INTERRUPTED_ATTRS = {"interrupted": True, "error": "interrupted by the user; re-run"}


class SearchInterrupted(Exception):
    """The user interrupted the search; ``study`` holds every trial finished so far."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__("search interrupted")
        self.study = study


class Interrupts:
    """SIGINT (and, for workers, SIGTERM) while a search runs.

    A plain search raises KeyboardInterrupt at once; a worker (``graceful``) only records the
    request, so its current trial finishes. Either way ``requested`` is set: a KeyboardInterrupt
    raised while Python runs a finaliser is printed and swallowed, and the loop must stop anyway.
    Inside ``deferred()`` the KeyboardInterrupt waits for ``raise_if_requested``: between asking
    for a trial and recording whose it is, an interrupted trial could never be recovered.
    """

    def __init__(self, graceful: bool) -> None:
        self.graceful = graceful
        self.requested = threading.Event()
        self._deferring = False

    def on_signal(self, signum: int, frame: Any) -> None:
        self.requested.set()
        if not self.graceful and not self._deferring:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    @property
    def raised(self) -> bool:
        """Whether a KeyboardInterrupt was raised in this process (or is being held back)."""
        return self.requested.is_set() and not self.graceful

    def raise_if_requested(self) -> None:
        if self.raised:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_requests(graceful: bool = False) -> Iterator[Interrupts]:
    interrupts = Interrupts(graceful)
    if threading.current_thread() is not threading.main_thread():
        yield interrupts  # signal handlers can only be set from the main thread
        return
    signals = (signal.SIGINT, signal.SIGTERM) if graceful else (signal.SIGINT,)
    previous = {number: signal.signal(number, interrupts.on_signal) for number in signals}
    try:
        yield interrupts
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
