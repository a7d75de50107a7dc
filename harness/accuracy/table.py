"""``table:FILE``: accuracies the user brings (from their own training runs, or a paper's table),
looked up per configuration, so a study can search on real accuracies without training.

FILE is a CSV or a Parquet file (Parquet needs pyarrow) with an ``accuracy`` column and either

* a ``config_key`` column holding ``CandidateConfig.key()`` (what ``pareto.json`` and the reports
  print), which identifies every key at once; or
* one column per configuration key (``embed_dim``, ``depth``, ``num_heads``, ...): a
  configuration matches the row whose values equal its own on the keys the table has, so a table
  over a search space needs only the keys the space varies. Other columns (a model name, notes)
  are ignored. Cells are parsed as ``--set`` values are (``[3, 4, 3]`` is a per-layer list) and
  normalised as the configuration is, so ``4`` matches an ``mlp_ratio`` of 4.0; a per-layer list
  matches only a per-layer list, as two such configurations also have different keys.

The accuracy is returned as written (a fraction or a percentage); only its order matters.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import yaml

from harness.accuracy.base import BaseAccuracyEstimator, ReportIntermediate, register_estimator_kind
from harness.config import KEY_SPECS, CandidateConfig, check_value
from harness.errors import ConfigError, FileError, shorten
from harness.files import check_readable_file
from harness.models import VisionTransformer
from harness.yaml_files import load_yaml

ACCURACY_COLUMN = "accuracy"
KEY_COLUMN = "config_key"
# How many differing keys a "not in table" message shows before it elides the rest.
SUMMARY_KEYS = 6


def _read(path: Path) -> Any:
    """The table as a pandas DataFrame; one-line ``ConfigError`` when it cannot be read."""
    import pandas as pd

    try:
        check_readable_file(path, "accuracy table")
    except FileError as error:
        raise ConfigError(str(error)) from None
    if path.suffix.lower() == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(f"reading the Parquet table {path} needs pyarrow: pip install pyarrow")
        return pd.read_parquet(path)
    try:
        # keys are text: read as numbers, "012e45678901" would lose its zero or become a float
        return pd.read_csv(path, dtype={KEY_COLUMN: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).replace("\n", " ")
        raise ConfigError(f"accuracy table {path}: not a readable CSV ({reason})") from None


def _cell(key: str, value: Any, where: str) -> Any:
    """A table cell as the configuration holds ``key``'s value."""
    if hasattr(value, "item"):  # numpy scalars from pandas
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where}{key}: empty cell")
    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            pass  # not YAML: compare the text itself, and let check_value reject it if invalid
    if isinstance(value, float) and value.is_integer() and not KEY_SPECS[key].check(value):
        value = int(value)  # an integer column read as float (Parquet, or a CSV with decimals)
    return check_value(key, value, where)


class TableEstimator(BaseAccuracyEstimator):
    """Accuracy looked up in a user's table: ``table:results.csv``."""

    kind = "table"

    def __init__(self, argument: str) -> None:
        super().__init__(argument)
        self.path = Path(argument)
        frame = _read(self.path)
        if ACCURACY_COLUMN not in frame.columns:
            raise ConfigError(f"accuracy table {self.path} has no {ACCURACY_COLUMN!r} column "
                              f"(columns: {', '.join(map(str, frame.columns))})")
        if KEY_COLUMN in frame.columns:
            self.keys: tuple[str, ...] = ()
        else:
            self.keys = tuple(str(c) for c in frame.columns if c in KEY_SPECS)
            if not self.keys:
                raise ConfigError(
                    f"accuracy table {self.path} needs a {KEY_COLUMN!r} column or columns named "
                    f"after configuration keys ({', '.join(KEY_SPECS)})")
        self.accuracies: dict[Any, float] = {}
        for row, record in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
            where = f"accuracy table {self.path} row {row}: "
            accuracy = record[ACCURACY_COLUMN]
            if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
                raise ConfigError(f"{where}accuracy: expected a number, got {shorten(accuracy)}")
            match = (str(record[KEY_COLUMN]) if not self.keys
                     else tuple(_cell(key, record[key], where) for key in self.keys))
            if self.accuracies.get(match, accuracy) != accuracy:
                raise ConfigError(f"{where}the same configuration as an earlier row with another "
                                  f"accuracy ({self.accuracies[match]} vs {accuracy})")
            self.accuracies[match] = float(accuracy)

    @property
    def description(self) -> str:
        return f"accuracy from table {self.path.name} ({len(self.accuracies)} configurations)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        match = (config.key() if not self.keys
                 else tuple(getattr(config, key) for key in self.keys))
        if match not in self.accuracies:
            raise ConfigError(f"configuration {config.key()} ({self._summary(config)}) is not in "
                              f"table {self.path}")
        return self.accuracies[match]

    def _summary(self, config: CandidateConfig) -> str:
        """The values the lookup used, or for ``config_key`` tables the keys that differ from the
        defaults (DeiT-Tiny at 224 px), which is what tells configurations apart."""
        values = config.to_dict()
        if self.keys:
            shown = list(self.keys)
        else:
            defaults = CandidateConfig().to_dict()
            shown = [key for key in values if values[key] != defaults[key]] or ["embed_dim"]
        text = ", ".join(f"{key}={values[key]}" for key in shown[:SUMMARY_KEYS])
        return text + (", …" if len(shown) > SUMMARY_KEYS else "")


@register_estimator_kind("table", lambda: "table:FILE (CSV or Parquet: accuracy and config_key "
                                          "or configuration-key columns)")
def make_table_estimator(argument: str) -> TableEstimator:
    return TableEstimator(argument)
