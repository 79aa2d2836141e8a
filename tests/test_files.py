"""files.py: what normlab reads must be a bounded regular file; where the cache lives with a broken environment."""

import json
import math
import os
import pwd
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from normlab import files

FUZZ_EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "1000"))


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


DEPTH_32 = "[" * files.MAX_DEPTH + "]" * files.MAX_DEPTH


@pytest.mark.parametrize("text,problem", [
    ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels deep"),  # json.loads: RecursionError
    ("[" + DEPTH_32 + "]", "nested more than 32 levels deep"),  # parses, but deeper than any file of ours
    ('{"a": NaN}', "not valid JSON (NaN is not a finite number"),
    ("[-Infinity]", "not valid JSON (-Infinity is not a finite number"),
    ("[1e400]", "not valid JSON (1e400 is beyond a float's range)"),
    ("9" * 5000, "not valid JSON (Exceeds the limit"),
    ("{runs: []}", "not valid JSON (Expecting property name"),
    (b"[\xff]", "not valid JSON ("),
    (5, "not valid JSON (the JSON object must be str"),
])
def test_json_is_strict_and_nests_at_most_max_depth(text, problem):
    with pytest.raises(files.FileProblem, match=f"^where\\\\n: {re.escape(problem)}"):
        files.parse_json(text, files.one_line("where\n"))


def test_json_within_the_bounds_reads_as_json_loads_reads_it(tmp_path):
    assert files.parse_json(DEPTH_32, "w") == json.loads(DEPTH_32)
    assert files.parse_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}', "w") == {"a": [1, 2.5, "é", None, True]}
    record = files.parse_json('{"loss": [NaN, Infinity, 1e400]}', "w", allow_nan=True)["loss"]
    assert math.isnan(record[0]) and record[1] == record[2] == math.inf
    (tmp_path / "f.json").write_text('{"a": 1}')
    assert files.read_json(tmp_path / "f.json", 8) == {"a": 1}
    with pytest.raises(files.FileProblem, match="more than the 7 expected"):
        files.read_json(tmp_path / "f.json", 7)


JSON_PIECES = st.sampled_from(['[', ']', '{', '}', '"a"', ':', ',', '1', '-0.5e3', '1e999', 'NaN', 'Infinity', 'null',
                               'true', ' ', '"\\ud800"', '"\\', '9' * 20])


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(pieces=st.lists(JSON_PIECES, max_size=200), nesting=st.integers(0, 2000))
def test_fuzz_parse_json_returns_bounded_json_or_raises_a_file_problem(pieces, nesting):
    text = "[" * nesting + "".join(pieces) + "]" * nesting
    try:
        value = files.parse_json(text, "fuzz")
    except files.FileProblem as problem:
        assert str(problem).startswith("fuzz: ") and "\n" not in str(problem)
        return
    assert value == json.loads(text) and not files.nested_deeper(value, files.MAX_DEPTH)
    assert all(math.isfinite(v) for v in leaves(value) if isinstance(v, float))


def leaves(value):
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, (dict, list)):
            stack += value.values() if isinstance(value, dict) else value
        else:
            yield value
