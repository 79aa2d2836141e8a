"""Nothing normlab writes follows a link planted beside it, `normlab export` replaces nothing that is not its own,
and a name read from a model file reaches the terminal only once checked (issue 28, items 1 and 8).

The temp names are random now, so a link cannot be planted at the next one: the CLI tests plant links at every
name the writers used before, and at the random name once its random part is patched to be known.
"""

import json
import os
import secrets
import shutil
import socket
import stat
import time
import zipfile

import numpy as np
import pytest

from clitools import normlab, one_line_error, session_cache, tree  # noqa: F401
from normlab import atomic
from normlab.bench import common
from normlab.report.hparams import write_hparams
from normlab.train import checkpoint

TINY = ["--subset", "500", "--epochs", "1"]
ESCAPES = "\x1b[2J\x1b]0;OWNED\x07\rFAKE: accuracy 0.99"  # clears the screen, retitles it, then fakes a result
FORMATS = (".keras", ".onnx", ".safetensors")


@pytest.fixture
def victim(tmp_path):
    """A file outside the folders normlab writes: every planted link points at it."""
    path = tmp_path / "victim" / "passwd"
    path.parent.mkdir()
    path.write_text("root:x:0:0\n", encoding="utf-8")
    return path


def plant(folder, names, target):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(target)


# The primitive (normlab.atomic).

def test_the_temp_file_is_new_random_and_never_opened_through_a_link(tmp_path, monkeypatch):
    opened = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        opened.append((os.fspath(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    for _ in range(2):
        atomic.write_atomically(tmp_path / "out.json", b"{}")
    temps = [(os.path.basename(path), flags) for path, flags in opened if flags & os.O_CREAT]
    assert len(temps) == 2 and temps[0][0] != temps[1][0], opened
    for name, flags in temps:
        assert name.startswith(".out.json.") and atomic.TEMPORARY.fullmatch(name), name
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW, name


def test_a_link_planted_at_the_temp_name_fails_the_write_instead_of_being_followed(tmp_path, monkeypatch, victim):
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "0" * 16)  # the random part, made known
    folder = tmp_path / "shared"
    plant(folder, [".out.json.tmp", ".out.json.0000000000000000.tmp"], victim)  # the old temp name and the new one
    with pytest.raises(OSError):
        atomic.write_atomically(folder / "out.json", b"{}")
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n" and not os.path.lexists(folder / "out.json")


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path, victim):
    folder = tmp_path / "shared"
    plant(folder, ["out.json"], victim)
    atomic.write_atomically(folder / "out.json", b"{}")
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"
    assert not (folder / "out.json").is_symlink() and (folder / "out.json").read_bytes() == b"{}"
    assert os.listdir(folder) == ["out.json"]


def test_a_writer_that_takes_a_path_writes_in_a_private_folder_that_goes_in_any_case(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    with atomic.replacing_by_name(target, "model.keras") as path:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and path.parent.parent == tmp_path
        path.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(KeyboardInterrupt), atomic.replacing_by_name(target, "model.keras") as path:
        path.write_bytes(b"half")
        raise KeyboardInterrupt  # a Ctrl-C mid-write
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.keras"]


def test_a_signal_mid_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    (tmp_path / "out.json").write_bytes(b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomically(tmp_path / "out.json", b"new")
    assert os.listdir(tmp_path) == ["out.json"] and (tmp_path / "out.json").read_bytes() == b"old"


def test_a_log_replaces_a_link_at_its_name(tmp_path, victim):
    plant(tmp_path / "logs", ["worker-0.log"], victim)
    with atomic.open_fresh(tmp_path / "logs" / "worker-0.log") as log:
        log.write(b"started\n")
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"
    assert (tmp_path / "logs" / "worker-0.log").read_bytes() == b"started\n"


def test_a_checkpoint_write_removes_only_its_own_leftover_temps(tmp_path):
    leftovers = [".epoch-0001.safetensors.0123456789abcdef.tmp"]  # a write killed mid-way
    kept = [".notes.txt.0123456789abcdef.tmp", ".epoch-0001.safetensors.mine.tmp", "notes.txt"]
    for name in leftovers + kept:
        (tmp_path / name).write_text("x", encoding="utf-8")
    checkpoint.save(tmp_path, 2, {"w": np.ones(2, np.float32)}, {})
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["epoch-0002.safetensors"])


# Writers outside normlab.atomic before: the bench's result, TensorBoard's HParams events.

def test_a_bench_result_does_not_follow_a_planted_link(tmp_path, victim):
    plant(tmp_path, ["normlab.tmp"], victim)
    common.write_result(tmp_path / "normlab.json", {"status": "ok"})
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"
    assert json.loads((tmp_path / "normlab.json").read_text(encoding="utf-8"))["status"] == "ok"


def test_hparams_events_do_not_follow_links_planted_at_their_guessable_names(tmp_path, victim):
    """tensorboardX names an event file by the second and the host: the next two minutes' names, planted."""
    run = {"preset": "bn-after", "seed": 0, "history": {}, "status": "diverged", "diverged_epoch": 1, "test": None}
    folder = tmp_path / "hp" / "t" / "bn-after" / "seed0"
    now = int(time.time())
    plant(folder, [f"events.out.tfevents.{t}.{socket.gethostname()}" for t in range(now, now + 120)], victim)
    write_hparams([{"runs": [run], "study": {"trial": "t"}}], tmp_path / "hp")
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"
    assert [p.name for p in folder.iterdir() if not p.is_symlink()]


# Through the CLI: a run and its exports.

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished ``train bn-after`` run with one export of each format in its export folder."""
    out = tmp_path_factory.mktemp("safe-writes") / "run"
    code, _, err = normlab("train", "bn-after", *TINY, "--out", out)
    assert code == 0, err
    for suffix in FORMATS:
        code, _, err = normlab("export", out, "--format", suffix[1:])
        assert code == 0, err
    return out


def exported(run_dir, suffix):
    return run_dir / "export" / f"bn-after-seed0{suffix}"


@pytest.mark.full_data
def test_a_resumed_run_and_its_exports_follow_no_planted_link(tmp_path, run_dir, victim):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    old_temps = [f".{name}.tmp" for name in ("results.json", "history.csv", "report.md", "learning_curves.png",
                                             "val_accuracy.png")]
    plant(out, old_temps, victim)
    plant(out / "checkpoints" / "bn-after", [".epoch-0002.safetensors.tmp"], victim)
    plant(out / "export", [f".bn-after-seed0{suffix}.tmp" for suffix in (".onnx", ".safetensors")], victim)
    code, _, err = normlab("train", "bn-after", "--subset", "500", "--epochs", "2", "--out", out, "--resume")
    assert code == 0, err
    for suffix in (".onnx", ".safetensors"):  # (.keras used the pid in its temp name: the private folder's test)
        code, _, err = normlab("export", out, "--format", suffix[1:])
        assert code == 0, err
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"][0]["history"]["loss"][1]
    assert not any(p.is_symlink() for p in [out / "results.json", *(out / "export").iterdir()] if not
                   p.name.startswith("."))


def foreign_keras(path, run_dir, victim):
    """A .keras zip as Keras writes it, without normlab's mark: someone else's model."""
    shutil.copy(exported(run_dir, ".keras"), path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = b""


TARGETS = {  # what is at --out, and the format it is asked in: the rules are the same for every format
    "a user's notes": (".keras", lambda path, run_dir, victim: path.write_text("my notes\n", encoding="utf-8")),
    "a FIFO": (".safetensors", lambda path, run_dir, victim: os.mkfifo(path)),
    "a link to a device": (".onnx", lambda path, run_dir, victim: path.symlink_to("/dev/null")),
    "a link to a user's file": (".safetensors", lambda path, run_dir, victim: path.symlink_to(victim)),
    "a link to normlab's own export": (".keras", lambda path, run_dir, victim: path.symlink_to(
        exported(run_dir, ".keras"))),
    "a folder": (".onnx", lambda path, run_dir, victim: path.mkdir()),
    "a Keras file normlab did not write": (".keras", foreign_keras),
    "an ONNX file normlab did not write": (".onnx", lambda path, run_dir, victim: path.write_bytes(
        b"\x08\x07\x12\x07pytorch" + exported(run_dir, ".onnx").read_bytes()[11:])),
}


def state(path):
    """What is at ``path`` itself: its type, where it links to, a regular file's content."""
    mode = os.lstat(path).st_mode
    return mode, os.readlink(path) if stat.S_ISLNK(mode) else None, path.read_bytes() if stat.S_ISREG(mode) else None


@pytest.mark.full_data
@pytest.mark.parametrize("what", TARGETS)
def test_export_refuses_a_target_that_is_not_its_own(tmp_path, run_dir, victim, what):
    suffix, make = TARGETS[what]
    out = tmp_path / f"target{suffix}"
    make(out, run_dir, victim)
    before = state(out), exported(run_dir, ".keras").read_bytes()
    code, _, err = normlab("export", run_dir, "--out", out, timeout=120)  # a FIFO opened for writing would block
    one_line_error(code, err, "--out", str(out))
    assert (state(out), exported(run_dir, ".keras").read_bytes()) == before
    assert victim.read_text(encoding="utf-8") == "root:x:0:0\n"


@pytest.mark.full_data
@pytest.mark.parametrize("target", ["results.json", "checkpoints/bn-after/epoch-0001.safetensors",
                                    "model.keras", "checkpoints/bn-after/model.safetensors", "logs/m.onnx"])
def test_export_writes_nothing_of_a_run_folder_but_its_export_folder(tmp_path, run_dir, target):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = tree(out)
    code, _, err = normlab("export", out, "--out", out / target)
    one_line_error(code, err, "--out", str(out / target))
    assert tree(out) == before


@pytest.mark.full_data
@pytest.mark.parametrize("suffix", FORMATS)
def test_export_replaces_its_own_earlier_export(tmp_path, run_dir, suffix):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    mine = tmp_path / f"mine{suffix}"
    shutil.copy(exported(out, suffix), mine)
    for target, args in [(exported(out, suffix), ["--format", suffix[1:]]), (mine, ["--out", mine])]:
        inode = target.stat().st_ino
        code, stdout, err = normlab("export", out, *args)
        assert code == 0 and stdout.startswith("wrote "), err
        assert target.stat().st_ino != inode  # a new file took its place
    assert sorted(os.listdir(out / "export")) == sorted(f"bn-after-seed0{s}" for s in FORMATS)


# Names read from model files.

def with_model_name(run_dir, suffix, path, name):
    """The run's export, its model renamed: in the safetensors header, or in the .keras file's config.json."""
    source = exported(run_dir, suffix)
    if suffix == ".safetensors":
        blob = source.read_bytes()
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + size])
        header["__metadata__"]["model"] = json.dumps({**json.loads(header["__metadata__"]["model"]), "name": name})
        text = json.dumps(header).encode()
        path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + size:])
    else:
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
            for item in old.infolist():
                content = old.read(item)
                if item.filename == "config.json":
                    config = json.loads(content)
                    config["config"]["name"] = name
                    content = json.dumps(config).encode()
                new.writestr(item, content)
    return path


@pytest.mark.full_data
@pytest.mark.parametrize("suffix", [".safetensors", ".keras"])
def test_a_model_name_with_terminal_escapes_is_refused_shown_escaped(tmp_path, run_dir, suffix):
    path = with_model_name(run_dir, suffix, tmp_path / f"evil{suffix}", ESCAPES)
    code, stdout, err = normlab("evaluate", path)
    one_line_error(code, err, "model name", "\\x1b")
    assert "\x1b" not in stdout + err and "\r" not in stdout + err and "FAKE" not in stdout


@pytest.mark.full_data
def test_a_file_name_with_terminal_escapes_is_printed_escaped(tmp_path, run_dir):
    path = tmp_path / f"{ESCAPES}.safetensors"
    shutil.copy(exported(run_dir, ".safetensors"), path)
    code, stdout, err = normlab("evaluate", path)
    assert code == 0 and len(stdout.splitlines()) == 1, err
    assert "\x1b" not in stdout + err and "\r" not in stdout and "\\x1b[2J" in stdout
    code, stdout, err = normlab("export", run_dir, "--out", tmp_path / f"{ESCAPES}.onnx")
    assert code == 0 and len(stdout.splitlines()) == 1 and "\x1b" not in stdout + err, err
