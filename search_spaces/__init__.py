"""Search spaces shipped with the harness, installed as ``harness.search_spaces`` (YAML files)."""
