"""Benchmark suites shipped with the harness, installed as ``harness.bench_suites`` (YAML files)."""
