"""Accuracy estimators, the search's accuracy objective: ``supernet:DATASET``, ``proxy:NAME``,
``train:DATASET``, ``table:FILE`` (see ``base.py``; every kind registers in ``estimators.py``).

The names of ``estimators`` load on first use, with torch, so that code which only reads
results (``harness report``, ``spread.py``) imports none of it."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(importlib.import_module("harness.accuracy.estimators"), name)
    except AttributeError:
        raise AttributeError(f"module 'harness.accuracy' has no attribute {name!r}") from None
