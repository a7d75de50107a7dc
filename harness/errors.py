"""Exceptions raised by the harness.

Library code raises these and never prints or exits; ``harness.cli`` turns a ``HarnessError`` into
one line on stderr and exit code 2.
"""

from __future__ import annotations

import reprlib


class HarnessError(Exception):
    """Base class for every error that is the user's input, not a bug."""


class ConfigError(HarnessError):
    """A candidate configuration key or value is invalid."""


class SearchSpaceError(HarnessError):
    """A search-space file is missing, malformed or inconsistent."""


class BudgetError(HarnessError):
    """A budget string cannot be parsed, or no configuration of the space can meet it."""


class DeviceError(HarnessError):
    """A device is unknown, its profile is malformed, or it is not present on this host."""


class StudyError(HarnessError):
    """A study cannot be created, resumed or read."""


class FileError(HarnessError):
    """A file or directory the user named cannot be read or written, or is not what it should be."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8


def shorten(value: object) -> str:
    """``repr(value)`` cut to a readable length, for echoing user input in an error message: a
    200,000-item list must not make a megabyte-long line."""
    return _SHORT.repr(value)
