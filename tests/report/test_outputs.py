"""What the report writes: whole files or none, UTF-8 whatever the locale, and never over a file that is not ours."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from normlab import atomic, files
from normlab.errors import ConfigError
from normlab.report import html, write_all
from normlab.report.html import report_command

NAME = "bn-après μ"  # not ASCII: a C locale cannot encode it


def run(preset: str, seed: int = 0) -> dict:
    val = [0.6, 0.7]
    return {"preset": preset, "seed": seed, "status": "ok", "diverged_epoch": None,
            "setting": {"preset": preset, "learning_rate": 0.1},
            "history": {"loss": [0.5, 0.4], "accuracy": val, "val_loss": [0.6, 0.5], "val_accuracy": val},
            "test": {"loss": 0.4, "accuracy": 0.7}, "time": {"compile_s": 1.0, "train_s": 2.0}}


RESULTS = {"provenance": {"git_commit": "abc"}, "runs": [run("baseline"), run(NAME), run(NAME, 1)]}


def run_dir(folder, results=RESULTS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def regular_files(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names}


@pytest.fixture
def written(monkeypatch):
    """Every path that went through the atomic writer."""
    paths = []
    real = files.write_atomically

    def spy(path, blob):
        paths.append(os.fspath(path))
        real(path, blob)

    monkeypatch.setattr(files, "write_atomically", spy)
    return paths


def test_every_report_file_is_written_atomically(tmp_path, written):
    write_all(RESULTS, tmp_path / "out")
    report_command([run_dir(tmp_path / "run")])
    produced = {str(tmp_path / "out" / p) for p in regular_files(tmp_path / "out")}
    produced |= {str(tmp_path / "run" / p) for p in ("summary.html", "summary.md")}
    assert produced == set(written)


@pytest.mark.parametrize("victim", ["history.csv", "learning_curves.png", "val_accuracy.png", "report.md"])
def test_a_failed_write_keeps_the_previous_file_whole(tmp_path, monkeypatch, victim):
    write_all(RESULTS, tmp_path)
    before = (tmp_path / victim).read_bytes()
    real = files.write_atomically

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_disk_for_victim(path, blob):
        if os.path.basename(path) == victim:
            monkeypatch.setattr(atomic.os, "fsync", full_disk)
        real(path, blob)

    monkeypatch.setattr(files, "write_atomically", full_disk_for_victim)
    with pytest.raises(OSError):
        write_all({**RESULTS, "runs": RESULTS["runs"][:1]}, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / victim).read_bytes() == before
    assert not [p for p in regular_files(tmp_path) if p.endswith(".tmp")]


def test_a_failing_page_leaves_no_file(tmp_path, monkeypatch):
    folder = run_dir(tmp_path / "run")

    def broken(*args):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(html, "learning_curves_png", broken)
    with pytest.raises(RuntimeError):
        report_command([folder])
    assert sorted(os.listdir(folder)) == ["results.json"]


def test_files_are_utf8_in_a_c_locale(tmp_path):
    """A child with LC_ALL=C, no UTF-8 mode and an ASCII stdio writes every report file as UTF-8."""
    folder = run_dir(tmp_path / "run")
    script = textwrap.dedent(f"""
        import json, locale
        from pathlib import Path
        assert locale.getpreferredencoding(False) == "ANSI_X3.4-1968", locale.getpreferredencoding(False)
        from normlab.report import write_all
        from normlab.report.html import report_command
        folder = Path({str(folder)!r})
        write_all(json.loads((folder / "results.json").read_text(encoding="utf-8")), folder / "reproduce")
        report_command([folder])
    """)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii"}
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    for path in ("reproduce/history.csv", "reproduce/report.md", "summary.html", "summary.md"):
        assert NAME in (folder / path).read_bytes().decode("utf-8"), path


def test_folder_with_a_non_utf8_name(tmp_path):
    folder = run_dir(tmp_path / os.fsdecode(b"dir\xff"))
    page = report_command([folder])
    text = page.read_bytes().decode("utf-8")  # strict: the page is valid UTF-8
    assert "dir\ufffd" in text
    assert sorted(os.listdir(folder)) == ["results.json", "summary.html", "summary.md"]


def refused(folder, out) -> str:
    with pytest.raises(ConfigError) as caught:
        report_command([folder], out)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_users_own_page_is_not_overwritten(tmp_path):
    folder = run_dir(tmp_path / "run")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>", encoding="utf-8")
    assert "not written by normlab" in refused(folder, notes)
    assert notes.read_text(encoding="utf-8") == "<html>my notes</html>"
    assert not (tmp_path / "notes.md").exists()


def test_a_users_markdown_beside_the_page_is_not_overwritten(tmp_path):
    folder = run_dir(tmp_path / "run")
    (tmp_path / "notes.md").write_text("# my notes\n", encoding="utf-8")
    refused(folder, tmp_path / "notes.html")
    assert (tmp_path / "notes.md").read_text(encoding="utf-8") == "# my notes\n"
    assert not (tmp_path / "notes.html").exists()


def test_reproduce_report_md_is_not_overwritten_by_the_twin(tmp_path):
    folder = run_dir(tmp_path / "run")
    write_all(RESULTS, folder)
    before = (folder / "report.md").read_bytes()
    refused(folder, folder / "report.html")
    assert (folder / "report.md").read_bytes() == before


def test_our_own_report_is_replaced(tmp_path):
    folder = run_dir(tmp_path / "run")
    out = tmp_path / "cmp.html"
    report_command([folder], out)
    run_dir(folder, {"runs": [run("other-preset")]})
    report_command([folder], out)
    assert "other-preset" in out.read_text(encoding="utf-8") and "other-preset" in (tmp_path / "cmp.md").read_text()


def test_a_page_from_before_the_generator_tag_is_ours(tmp_path):
    folder = run_dir(tmp_path / "run")
    old = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>normlab report</title><style>"
    (folder / "summary.html").write_text(old, encoding="utf-8")
    (folder / "summary.md").write_text("# normlab report\n\nold\n", encoding="utf-8")
    assert report_command([folder]).read_text(encoding="utf-8") != old


def test_out_folder_gets_summary_html_and_md_out_is_refused(tmp_path):
    folder = run_dir(tmp_path / "run")
    (tmp_path / "reports").mkdir()
    assert report_command([folder], tmp_path / "reports") == tmp_path / "reports" / "summary.html"
    assert (tmp_path / "reports" / "summary.md").exists()
    assert "Markdown twin" in refused(folder, tmp_path / "page.md")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_out_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    folder = run_dir(tmp_path / "run")
    out = tmp_path / "page.html"
    twin = tmp_path / "page.md"
    if kind == "fifo":
        os.mkfifo(twin)
    elif kind == "dev-zero":
        out.symlink_to("/dev/zero")
    else:
        (twin / "inside").mkdir(parents=True)
    refused(folder, out)
