"""Devices: profiles from ``device_profiles/*.yaml`` bound to the implementation of their kind
(``profiles.py``: ``get_device``, ``load_profile``, the kinds' registry).

The names of ``profiles`` load on first use, with the implementations and torch, so that code
which never measures (``harness report``, the contention and lock modules) imports none of it."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(importlib.import_module("harness.devices.profiles"), name)
    except AttributeError:
        raise AttributeError(f"module 'harness.devices' has no attribute {name!r}") from None
