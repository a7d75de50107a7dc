"""Benchmark suites: ``harness bench`` measures each entry of a suite and stores one result file.

A suite (``benchmarks/suites/*.yaml``, installed as ``harness.bench_suites``, or any YAML path)
lists model configurations (a preset, configuration keys, or every configuration of a study's
``pareto.json``), with a batch size and a regression threshold per entry. Each measured entry
becomes one JSON file under ``OUT/<machine>/<commit>/<suite>/<entry>@<time>.json`` with the raw
samples, the drift-corrected and the raw summary, the drift correction, the evidence of contention
on the host, energy and the environment: files are never overwritten (a new run gets a new time)
and are written atomically, so a crash never leaves half a result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.checkpoint import Checkpoint, load_checkpoint
from harness.config import CandidateConfig, check_keys_take_effect, load_config_file
from harness.cost import check_buildable
from harness.devices.base import MeasuredDevice
from harness.environment import capture_environment, git_commit_date
from harness.errors import ConfigError, FileError, HarnessError, shorten
from harness.files import named_child, read_text, write_atomically
from harness.models import build_model, preset_config
from harness.records import BenchRunRecord, read_bench_results
from harness.timing import MeasurementProtocol
from harness.yaml_files import parse_yaml, read_named_or_path, string_field

SUITES_PACKAGE = "harness.bench_suites"
SUITE_SCHEMA_VERSION = 1
DEFAULT_THRESHOLD_PCT = 5.0
SUITE_KEYS = ("schema_version", "name", "description", "measurement", "defaults", "entries")
ENTRY_KEYS = ("name", "arch", "config", "set", "pareto", "batch_size", "threshold_pct", "weights")
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class BenchError(HarnessError):
    """A suite, a result file or a results directory is unusable."""


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    config: CandidateConfig
    batch_size: int
    threshold_pct: float
    weights: Checkpoint | None = None  # pretrained weights (a path relative to the suite)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    measurement: dict[str, Any]  # overrides of the device profile's protocol
    entries: list[SuiteEntry]
    source: str


def load_suite(name_or_path: str) -> Suite:
    text, source = read_named_or_path(name_or_path, SUITES_PACKAGE, "suite", BenchError)
    document = parse_yaml(text, source, BenchError)
    if not isinstance(document, dict):
        raise BenchError(f"{source}: expected a mapping with keys name, entries")
    unknown = set(document) - set(SUITE_KEYS)
    if unknown:
        raise BenchError(f"{source}: unknown key {shorten(min(unknown, key=str))}; valid: "
                         f"{', '.join(SUITE_KEYS)}")
    if document.get("schema_version", SUITE_SCHEMA_VERSION) != SUITE_SCHEMA_VERSION:
        raise BenchError(f"{source}: schema_version: expected {SUITE_SCHEMA_VERSION}")
    items = document.get("entries")
    if not isinstance(items, list) or not items:
        raise BenchError(f"{source}: entries: the suite has no entries; expected a list of "
                         f"mappings with name and arch, config or pareto")
    defaults = document.get("defaults") or {}
    base = Path(source).parent
    checkpoints: dict[Path, Checkpoint] = {}  # entries sharing a checkpoint share its tensors
    entries = [entry for index, item in enumerate(items)
               for entry in _entries(item, {**defaults}, f"{source}: entries[{index}]", base,
                                     checkpoints)]
    names = [e.name for e in entries]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise BenchError(f"{source}: entry name {shorten(duplicate)} appears twice")
    measurement = document.get("measurement") or {}
    if not isinstance(measurement, dict):
        raise BenchError(f"{source}: measurement: expected a mapping of protocol keys")
    return Suite(string_field(document, "name", Path(source).stem, source, BenchError),
                 string_field(document, "description", "", source, BenchError),
                 measurement, entries, source)


def _entries(item: Any, defaults: dict[str, Any], where: str, base: Path,
             checkpoints: dict[Path, Checkpoint]) -> list[SuiteEntry]:
    if not isinstance(item, dict):
        raise BenchError(f"{where}: expected a mapping with name and arch, config or pareto")
    unknown = set(item) - set(ENTRY_KEYS)
    if unknown:
        raise BenchError(f"{where}: unknown key {shorten(min(unknown, key=str))}; valid: "
                         f"{', '.join(ENTRY_KEYS)}")
    values = {**defaults, **item}
    name = values.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BenchError(f"{where}.name: expected a name of letters, digits and . _ + -, "
                         f"got {shorten(name)}")
    batch_size, threshold = _entry_numbers(values, where)
    sources = [key for key in ("arch", "config", "pareto") if key in item]
    if len(sources) != 1:
        raise BenchError(f"{where}: give exactly one of arch, config, pareto")
    overrides = item.get("set") or {}
    if not isinstance(overrides, dict):
        raise BenchError(f"{where}.set: expected a mapping of configuration keys, got "
                         f"{shorten(overrides)}")
    entries = []
    try:
        weights = values.get("weights")
        if weights is not None and not isinstance(weights, str):
            raise ConfigError(f"weights: expected a checkpoint path, got {shorten(weights)}")
        if weights and base / weights not in checkpoints:
            checkpoints[base / weights] = load_checkpoint(base / weights)
        checkpoint = checkpoints[base / weights] if weights else None
        for entry_name, config, stated in _configs(item, sources[0], base, name):
            config = config.from_dict({**config.to_dict(), **overrides}, where="set: ")
            check_keys_take_effect(config, [*stated, *overrides])
            check_buildable(config)
            if checkpoint is not None:
                config = checkpoint.fit(config)
            entries.append(SuiteEntry(entry_name, config, batch_size, float(threshold),
                                      checkpoint))
    except (ConfigError, FileError, OSError, ValueError) as error:
        raise BenchError(f"{where}: {error}") from None
    return entries


def _entry_numbers(values: dict[str, Any], where: str) -> tuple[int, float]:
    """An entry's batch size and regression threshold (percent), checked."""
    batch_size, threshold = values.get("batch_size", 1), values.get("threshold_pct",
                                                                     DEFAULT_THRESHOLD_PCT)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise BenchError(f"{where}.batch_size: expected a positive integer, got "
                         f"{shorten(batch_size)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
        raise BenchError(f"{where}.threshold_pct: expected a positive number, got "
                         f"{shorten(threshold)}")
    return batch_size, threshold


def _configs(item: dict[str, Any], source: str, base: Path,
             name: str) -> list[tuple[str, CandidateConfig, tuple[str, ...]]]:
    """(entry name, configuration, the keys the entry states) of each configuration an entry
    names; a study's Pareto front states none (see ``load_config_file``)."""
    if source == "arch":
        return [(name, preset_config(item["arch"]), ())]
    if source == "config":
        if isinstance(item["config"], dict):
            return [(name, CandidateConfig.from_dict(item["config"]), tuple(item["config"]))]
        return [(name, *load_config_file(base / item["config"]))]
    # every Pareto-optimal configuration a study exported, named by its trial
    front = json.loads(read_text(base / item["pareto"], "pareto file"))
    return [(f"{name}-trial{entry['trial']}", CandidateConfig.from_dict(entry["config"]), ())
            for entry in front]


def suite_protocol(suite: Suite, device: MeasuredDevice, batch_size: int) -> MeasurementProtocol:
    values = {**device.profile.protocol.to_dict(), **suite.measurement, "batch_size": batch_size}
    try:
        return MeasurementProtocol(**values)
    except TypeError as error:
        raise BenchError(f"{suite.source}: measurement: {error}") from None


def run_suite(suite: Suite, device: MeasuredDevice, out_dir: Path,
              entries: list[str] | None = None, rounds: int = 1,
              on_result: Callable[[SuiteEntry, Path, BenchRunRecord], None] | None = None,
              ) -> list[Path]:
    """Measure every entry (or the named ones) ``rounds`` times, interleaved, one file each.

    Entries alternate within each round (the first one rotating), so a host that slows down
    for a while slows every entry alike; ``harness compare`` treats each run as one replicate.
    """
    chosen = suite.entries
    if entries:
        known = {e.name for e in suite.entries}
        missing = [name for name in entries if name not in known]
        if missing:
            raise BenchError(f"suite {shorten(suite.name)} has no entry {shorten(missing[0])}; "
                             f"entries: {', '.join(sorted(known))}")
        chosen = [e for e in suite.entries if e.name in entries]
    for entry in chosen:  # a runtime that is missing or cannot run an entry fails before timing
        device.check_runtime(entry.config)
    environment = capture_environment(device)
    commit = environment["git_commit"] or "unknown"
    folder = named_child(out_dir / environment["machine_fingerprint"][:12] / commit[:12],
                         suite.name)
    written = []
    for round_index in range(rounds):
        shift = round_index % len(chosen)
        for entry in chosen[shift:] + chosen[:shift]:
            result = measure_entry(suite, entry, device, environment, commit)
            stamp = result.created.replace(":", "").replace("-", "")[:15]
            path = folder / f"{entry.name}@{stamp}.json"
            serial = 1
            while path.exists():  # two runs of one entry within a second: keep both
                path, serial = folder / f"{entry.name}@{stamp}-{serial}.json", serial + 1
            write_atomically(path, json.dumps(result.to_json(), indent=1) + "\n")
            written.append(path)
            if on_result:
                on_result(entry, path, result)
    return written


def measure_entry(suite: Suite, entry: SuiteEntry, device: MeasuredDevice,
                  environment: dict[str, Any], commit: str) -> BenchRunRecord:
    protocol = suite_protocol(suite, device, entry.batch_size)
    model = build_model(entry.config,
                        shared_weights=entry.weights.tensors if entry.weights else None)
    inputs = torch.randn(entry.batch_size, 3, entry.config.img_size, entry.config.img_size,
                         generator=torch.Generator().manual_seed(0))
    return BenchRunRecord(
        suite=suite.name, entry=entry.name, device=device.name,
        machine_fingerprint=environment["machine_fingerprint"], host=environment["host"],
        commit=commit, commit_date=git_commit_date(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        threshold_pct=entry.threshold_pct, config=entry.config.to_dict(),
        weights=entry.weights.describe() if entry.weights else None,
        batch_size=entry.batch_size,
        measurement=device.evaluate(entry.config, model, inputs, protocol),
        environment=environment,
    )


def busy_host_note(result: BenchRunRecord) -> str:
    """What ``harness bench`` prints beside a result measured on a busy host, else ""."""
    contention = result.measurement.contention
    if not result.measurement.contended:
        return ""
    reasons = "; ".join(contention.reasons) or "no reason recorded"
    busiest = ", ".join(contention.busiest)
    return (f"  HOST BUSY after {contention.takes} take(s): {reasons}"
            f"{f' (busiest: {busiest})' if busiest else ''}; not comparable, 'harness compare' "
            "leaves it out")


def load_results(path: Path) -> list[BenchRunRecord]:
    """The result files in ``path`` for a comparison: a result file this harness cannot read is
    an error naming it; other JSON (a pareto.json, a report) may share the directory."""
    results, skipped = read_bench_results(path)
    for file, reason in skipped:
        if not reason.startswith("kind is "):
            raise BenchError(f"{file}: not a readable result file ({reason})")
    if not results:
        raise BenchError(f"{path}: no benchmark result files (written by 'harness bench')")
    return results
