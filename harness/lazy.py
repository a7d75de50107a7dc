"""Packages whose names load on first use, so that importing one of their light modules does not
import torch (``harness.devices``, ``harness.accuracy``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def names_from(package: str, module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that serves every name of ``module``."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
