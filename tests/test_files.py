"""files.py: what normlab reads must be a bounded regular file; where the cache lives with a broken environment."""

import os
import pwd
from pathlib import Path

import pytest

from normlab import files


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "too_big", "missing"])
def test_only_bounded_regular_files_are_read(tmp_path, kind):
    path = tmp_path / "f"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "too_big":
        path.write_bytes(b"x" * 101)
    with pytest.raises(files.FileProblem):
        files.read_bytes(path, 100)


def test_text_is_utf8_whatever_the_locale(tmp_path):
    path = files.write_text(tmp_path / "sub" / "t.txt", "± — \udcff")
    assert path.read_bytes() == "± — ?".encode()
    assert files.read_text(path, 100) == "± — ?"
    (tmp_path / "latin1").write_bytes("é".encode("latin-1"))
    with pytest.raises(files.FileProblem, match="not UTF-8"):
        files.read_text(tmp_path / "latin1", 100)
    assert files.display(os.fsdecode(b"run-\xff")) == "run-\ufffd"


@pytest.mark.parametrize("home,xdg", [("", ""), (None, None), ("relative", "also/relative")])
def test_the_cache_is_never_relative_to_the_working_folder(monkeypatch, home, xdg):
    for name, value in (("HOME", home), ("XDG_CACHE_HOME", xdg)):
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    assert files.cache_root() == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "normlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert files.cache_root() == Path("/somewhere/normlab")


def test_messages_stay_one_printable_line():
    assert files.one_line("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert files.one_line(os.fsdecode(b"dir\xff")) == "dir\ufffd"
