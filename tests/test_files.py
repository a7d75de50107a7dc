"""The one reader and writer of user-named files, and safe names."""

from __future__ import annotations

import errno
import os

import pytest

from harness.errors import FileError, shorten
from harness.files import (
    check_writable_dir,
    check_writable_file,
    named_child,
    read_text,
    renamed_note,
    safe_name,
    write_atomically,
)


@pytest.mark.parametrize(("name", "safe"), [
    ("vit_tiny-cpu-1gflop", "vit_tiny-cpu-1gflop"),
    ("../../../tmp/x", "tmp-x"),
    ("/tmp/x", "tmp-x"),
    ("..", "unnamed"),
    ("", "unnamed"),
    ("a b\tc", "a-b-c"),
    ("proxy:dss", "proxy-dss"),
    ("train:mnist@200steps", "train-mnist-200steps"),
    (".hidden", "hidden"),
    ("x" * 300, "x" * 80),
    ("naïve", "na-ve"),
])
def test_safe_names(name, safe):
    assert safe_name(name) == safe
    assert (renamed_note("study", name) is None) == (name == safe)


@pytest.mark.parametrize("name", ["../../etc", "/etc", "a/../../b", "..", "~"])
def test_a_named_child_stays_in_its_folder(tmp_path, name):
    child = named_child(tmp_path, name)
    assert child.parent == tmp_path and child.resolve().is_relative_to(tmp_path.resolve())


def test_reading_names_the_file_and_what_is_wrong(tmp_path, monkeypatch):
    text = tmp_path / "space.yaml"
    text.write_text("name: x\n")
    assert read_text(text, "search space file") == "name: x\n"
    with pytest.raises(FileError, match=r"search space file .*nope.yaml: no such file"):
        read_text(tmp_path / "nope.yaml", "search space file")
    with pytest.raises(FileError, match=r"is a directory, expected a file"):
        read_text(tmp_path, "search space file")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(FileError, match=r"is not a regular file \(a FIFO"):
        read_text(fifo, "search space file")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"ok\n\x80\x81")
    with pytest.raises(FileError, match=r"not UTF-8 text \(byte 0x80 at offset 3\)"):
        read_text(binary, "search space file")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(FileError, match=r"big.yaml: larger than 1 MiB"):
        read_text(big, "search space file", max_bytes=1024 * 1024)
    # root reads any file whatever its mode: the refusal is faked where the OS reports it
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(FileError, match=r"space.yaml: cannot read it \(permission denied\)"):
        read_text(text, "search space file")


def test_output_checks_create_nothing_and_name_the_obstacle(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    check_writable_dir(tmp_path / "new" / "deeper")  # creatable: fine
    assert not (tmp_path / "new").exists()
    with pytest.raises(FileError, match=r"output directory .*a-file/x: .*a-file is not a directory"):
        check_writable_dir(blocker / "x")
    with pytest.raises(FileError, match=r"output file .*: is a directory, expected a file name"):
        check_writable_file(tmp_path)
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    with pytest.raises(FileError, match=r"dangling is a broken symbolic link"):
        check_writable_dir(tmp_path / "dangling" / "x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(FileError, match=r"cannot write in .* \(permission denied\)"):
        check_writable_dir(tmp_path / "new")


def test_a_failed_write_leaves_neither_half_a_file_nor_a_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("the previous report\n")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(FileError, match=r"cannot write .*report.html \(no space left on the device\)"):
        write_atomically(target, "<html>new</html>")
    assert target.read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileError, match=r"a-file: cannot create it"):
        write_atomically(tmp_path / "a-file" / "x.json", "{}")


def test_shorten_keeps_error_lines_readable():
    assert len(shorten(list(range(200_000)))) < 60
    assert len(shorten("x" * 10_000)) < 80
    assert shorten("window") == "'window'"
