"""Every file the user names goes through here: one reader, one writer, safe names, data home.

Reading maps ``OSError`` and ``UnicodeDecodeError`` to one ``FileError`` line naming the file and
what it was meant to be; a directory or a FIFO given where a file is expected is said to be one
(reading a FIFO would block for ever). Writing is atomic (temporary file + ``os.replace``), so a
crash or a full disk never leaves half a file, and output directories are checked before any work
starts, so a long search never ends on "permission denied".
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.errors import FileError, shorten

# Files the harness reads whole (YAML, JSON, CSV, reports): far above any real one, far below
# what would exhaust memory.
MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_NAME_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def check_readable_file(path: Path, what: str) -> None:
    """Raise ``FileError`` unless ``path`` is a regular file this process may read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileError(f"{what} {path}: no such file") from None
    except OSError as error:
        raise FileError(f"{what} {path}: cannot read it ({_reason(error)})") from None
    if stat.S_ISDIR(mode):
        raise FileError(f"{what} {path}: is a directory, expected a file")
    if not stat.S_ISREG(mode):
        raise FileError(f"{what} {path}: is not a regular file (a FIFO, socket or device)")
    if not os.access(path, os.R_OK):
        raise FileError(f"{what} {path}: cannot read it (permission denied)")


def read_bytes(path: Path, what: str, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a file the user named; ``what`` says what it should be ("search space file")."""
    path = Path(path)
    check_readable_file(path, what)
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as error:
        raise FileError(f"{what} {path}: cannot read it ({_reason(error)})") from None
    if len(data) > max_bytes:
        raise FileError(f"{what} {path}: larger than {max_bytes // (1024 * 1024)} MiB; "
                        "is it the right file?")
    return data


def read_text(path: Path, what: str, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a file the user named; not UTF-8 is one line with the byte offset."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileError(f"{what} {path}: not UTF-8 text (byte 0x{data[error.start]:02x} at "
                        f"offset {error.start})") from None


def _unwritable(directory: Path) -> str | None:
    """Why ``directory`` could not be created or written in, or None; creates nothing."""
    probe = directory
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            return f"{probe} is a broken symbolic link"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write in {probe} (permission denied)"
    return None


def check_writable_dir(path: Path, what: str = "output directory") -> None:
    """Raise ``FileError`` unless ``path`` is, or could be created as, a writable directory.

    Creates nothing: the command that fails here must leave no trace."""
    reason = _unwritable(Path(path))
    if reason:
        raise FileError(f"{what} {path}: {reason}")


def check_writable_file(path: Path, what: str = "output file") -> None:
    """Raise ``FileError`` unless ``path`` could be written (atomically) without creating anything
    first: its directory is writable, and it is not a directory itself."""
    path = Path(path)
    reason = ("is a directory, expected a file name" if path.is_dir()
              else _unwritable(path.parent))
    if reason:
        raise FileError(f"{what} {path}: {reason}")


def make_dir(path: Path, what: str = "output directory") -> Path:
    """``mkdir -p`` with one line naming the directory on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FileError(f"{what} {path}: cannot create it ({_reason(error)})") from None
    return path


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and ``os.replace``, so a crash never leaves half a file."""
    path = Path(path)
    with _temporary_copy(path, text, durable=False) as temporary:
        os.replace(temporary, path)


def write_new_file(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet: complete and on disk before it appears under its
    name (temporary file, fsync, hard link), and never in place of an existing file."""
    path = Path(path)
    with _temporary_copy(path, data, durable=True) as temporary:
        os.link(temporary, path)  # unlike a rename, fails if ``path`` exists
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash too
        finally:
            os.close(directory)


@contextlib.contextmanager
def _temporary_copy(path: Path, text: str | bytes, durable: bool) -> Iterator[str]:
    """A hidden temporary file next to ``path`` holding ``text``, for the caller to move into
    place; removed if it is still there afterwards. ``durable``: fsynced before it is handed
    over. An ``OSError`` becomes one ``FileError`` naming ``path``."""
    make_dir(path.parent)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as stream:
            stream.write(text.encode("utf-8") if isinstance(text, str) else text)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; results are meant to be shared
        yield temporary
    except OSError as error:
        reason = "no space left on the device" if error.errno == errno.ENOSPC else _reason(error)
        raise FileError(f"cannot write {path} ({reason})") from None
    finally:
        if temporary is not None and os.path.lexists(temporary):
            os.unlink(temporary)


def safe_name(text: str) -> str:
    """``text`` as one file-name component: letters, digits and ``_ . + -`` only, no leading dot,
    at most ``MAX_NAME_LENGTH`` characters. ``../../tmp/x`` becomes ``tmp-x``."""
    name = _UNSAFE.sub("-", str(text))
    name = re.sub(r"\.{2,}", ".", name).strip(".-")[:MAX_NAME_LENGTH].strip(".-")
    return name or "unnamed"


def named_child(root: Path, name: str) -> Path:
    """``root / safe_name(name)``: whatever ``name`` holds, the path stays inside ``root``."""
    return Path(root) / safe_name(name)


def renamed_note(what: str, name: str) -> str | None:
    """A note for the user when ``name`` had to change to become a file name, else None."""
    safe = safe_name(name)
    if safe == name:
        return None
    return f"{what} {shorten(name)} is not a safe file name; its files go under {safe!r}"


def data_home() -> Path:
    """Where the harness keeps user data (FPGA calibration records, rank checks):
    ``$HARNESS_DATA_DIR``, else ``$XDG_DATA_HOME/vit-harness``, else
    ``~/.local/share/vit-harness``."""
    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "vit-harness"
