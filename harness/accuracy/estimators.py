"""Every accuracy estimator kind, registered: ``supernet:DATASET``, ``proxy:NAME``,
``train:DATASET``, ``table:FILE`` (see ``base.py``)."""

from __future__ import annotations

from harness.accuracy.base import (
    BaseAccuracyEstimator,
    ReportIntermediate,
    get_estimator,
    register_estimator_kind,
    valid_estimators,
)
from harness.accuracy.proxies import PROXIES, DssIndicator, Proxy, register_proxy
from harness.accuracy.supernet import SupernetEstimator
from harness.accuracy.table import TableEstimator
from harness.accuracy.training import TrainingEstimator

__all__ = [
    "PROXIES",
    "BaseAccuracyEstimator",
    "DssIndicator",
    "Proxy",
    "ReportIntermediate",
    "SupernetEstimator",
    "TableEstimator",
    "TrainingEstimator",
    "get_estimator",
    "register_estimator_kind",
    "register_proxy",
    "valid_estimators",
]
