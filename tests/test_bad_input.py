"""Every bad input a user can give us: one line naming the file or option, the problem and the fix; exit 2."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from conftest import NAMES, idx_bytes

def normlab(*args):
    run = subprocess.run([sys.executable, "-m", "normlab.cli", *map(str, args)], capture_output=True, text=True,
                         timeout=120)
    return run.returncode, run.stderr.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("normlab: error:") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_wrong_sha256(data_dir):
    assert_one_line_error(*normlab("data", "--data-dir", data_dir), "train-images-idx3-ubyte", "SHA-256",
                          "differs", "fresh copy")


@pytest.mark.parametrize("damage,fragment", [
    ("truncated_gzip", "unreadable"),
    ("not_gzip", "unreadable"),
    ("bad_magic", "bad magic"),
    ("truncated_idx", "truncated"),
])
def test_broken_files(data_dir, damage, fragment):
    target = data_dir / NAMES[1]
    raw = target.read_bytes()
    if damage == "truncated_gzip":
        target.unlink()
        (data_dir / f"{NAMES[1]}.gz").write_bytes(gzip.compress(raw)[:-100])
    elif damage == "not_gzip":
        target.rename(data_dir / f"{NAMES[1]}.gz")
    elif damage == "bad_magic":
        target.write_bytes(b"\x01\x02" + raw[2:])
    else:
        target.write_bytes(raw[:-5])
    # --no-verify: the synthetic files differ from Fashion-MNIST, so the checksum would stop at the first file
    assert_one_line_error(*normlab("data", "--no-verify", "--data-dir", data_dir), NAMES[1], fragment)


@pytest.mark.parametrize("name,array,fragment", [
    (NAMES[0], np.zeros((60000, 28, 27)), "shape (60000, 28, 27), expected (60000, 28, 28)"),
    (NAMES[1], np.zeros(59999), "shape (59999,), expected (60000,)"),  # image/label count mismatch
    (NAMES[3], np.full(10000, 10), "label 10 outside 0..9"),
])
def test_wrong_content_even_without_checksums(data_dir, name, array, fragment):
    (data_dir / name).write_bytes(idx_bytes(array))
    assert_one_line_error(*normlab("data", "--no-verify", "--data-dir", data_dir), name, fragment)


def test_missing_file(data_dir):
    (data_dir / NAMES[2]).unlink()
    assert_one_line_error(*normlab("data", "--data-dir", data_dir), "lacks t10k-images-idx3-ubyte", "put the files")


def test_unreadable_or_wrong_kind_of_path(data_dir, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    assert_one_line_error(*normlab("data", "--data-dir", a_file), "not a folder")
    assert_one_line_error(*normlab("data", "--data-dir", tmp_path / "nowhere"), "missing")
    (data_dir / NAMES[0]).unlink()
    (data_dir / NAMES[0]).mkdir()  # present but unreadable as a file
    (data_dir / f"{NAMES[0]}.gz").mkdir()
    code, err = normlab("data", "--data-dir", data_dir)
    assert_one_line_error(code, err, NAMES[0])


@pytest.mark.parametrize("args,fragment", [
    (["train", "bn-aftr"], "did you mean 'bn-after'"),
    (["reproduce", "--presets", "baseline,bn_before"], "did you mean 'bn-before'"),
    (["reproduce", "--bn-momentun", "0.9"], "did you mean --bn-momentum?"),
    (["reproduce", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["reproduce", "--lr", "0"], "--lr: learning_rate must be a number in (0, "),
    (["reproduce", "--lr", "-1"], "--lr: learning_rate must be a number in (0, "),
    (["reproduce", "--lr", "inf"], "--lr: learning_rate must be a number in (0, "),
    (["reproduce", "--lr", "nan"], "--lr: learning_rate must be a number in (0, "),
    (["reproduce", "--batch-size", "0"], "--batch-size: batch_size must be an int in 1..67108864"),
    (["reproduce", "--epochs", "0"], "--epochs: epochs must be an int in 1..100000"),
    (["reproduce", "--optimizer", "adamw"], "--optimizer: optimizer must be one of sgd, momentum, adam"),
    (["reproduce", "--study", "nope.toml"], "study file nope.toml: cannot open"),
    (["reproduce", "--bn-momentum", "1.0"], "bn_momentum must be a number in [0, 1) as float32, got 1.0"),
    (["reproduce", "--bn-momentum", "-0.5"], "bn_momentum must be a number in [0, 1)"),
    (["reproduce", "--bn-eps", "0"], "--bn-eps: bn_epsilon must be a number in (0, "),
    (["reproduce", "--seeds", "2.5"], "argument --seeds: invalid int value: '2.5'"),
    (["reproduce", "--seeds", "0"], "--seeds: seeds must be an int in 1..1000"),
])
def test_bad_options_fail_before_any_work(tmp_path, args, fragment):
    out = tmp_path / "out"
    assert_one_line_error(*normlab(*args, "--out", out), fragment)
    assert not out.exists()
