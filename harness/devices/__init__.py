"""Devices: profiles from ``device_profiles/*.yaml`` bound to the implementation of their kind
(``profiles.py``: ``get_device``, ``load_profile``, the kinds' registry).

The names of ``profiles`` load on first use, with the implementations and torch, so that code
which never measures (``harness report``, the contention and lock modules) imports none of it."""

from __future__ import annotations

from harness.lazy import names_from

__getattr__ = names_from("harness.devices", "harness.devices.profiles")
