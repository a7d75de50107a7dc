"""Device profiles shipped with the harness, installed as ``harness.device_profiles`` (YAML files)."""
