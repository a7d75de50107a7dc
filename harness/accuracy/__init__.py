"""Accuracy estimators, the search's accuracy objective: ``supernet:DATASET``, ``proxy:NAME``,
``train:DATASET``, ``table:FILE`` (see ``base.py``; every kind registers in ``estimators.py``).

The names of ``estimators`` load on first use, with torch, so that code which only reads
results (``harness report``, ``spread.py``) imports none of it."""

from __future__ import annotations

from harness.lazy import names_from

__getattr__ = names_from("harness.accuracy", "harness.accuracy.estimators")
