"""Where the harness keeps user data, and writing files safely (whole or absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace``, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def data_home() -> Path:
    """Where the harness keeps user data (FPGA calibration records, rank checks):
    ``$HARNESS_DATA_DIR``, else ``$XDG_DATA_HOME/vit-harness``, else
    ``~/.local/share/vit-harness``."""
    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "vit-harness"
