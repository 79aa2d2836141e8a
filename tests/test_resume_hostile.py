"""Resuming what should resume and refusing what should not, through the real CLI: a run started from a model
file that is gone since, and whatever sits where a checkpoint's name should be. (A diagnosis resumed with other
settings: test_diagnose_cli.py.)"""

import json
import shutil

import jax
import pytest

from clitools import normlab, one_line_error, session_cache, tree  # noqa: F401

STUDY = """
[models.tiny-bn]
layers = [{kind = "flatten"}, {kind = "batch_norm"}, {kind = "dense", units = 8, activation = "relu"},
          {kind = "dense", units = 10, activation = "softmax"}]

[config]
subset = 200
batch_size = 50
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "tiny.toml"
    path.write_text(STUDY)
    return path


def train(study, data, out, epochs, *extra):
    """``normlab train tiny-bn`` on the synthetic files: a few seconds an epoch, most of it the start."""
    return normlab("train", "tiny-bn", "--study", study, "--data-dir", data, "--no-verify", "--epochs", epochs,
                   "--out", out, *extra)


def model_file(study, path, seed):
    """tiny-bn with the weights ``seed`` draws, written as `normlab export` writes it: a file to start from."""
    from normlab.experiments.study import load
    from normlab.interop.safetensors_io import write_safetensors
    from normlab.interop.weights import Weights
    from normlab.nn.models import init
    model = load(str(study)).base.model("tiny-bn")
    write_safetensors(Weights(model, *init(model, jax.random.key(seed))), path)
    return path


def history(out):
    return json.loads((out / "results.json").read_text())["runs"][0]["history"]


def test_a_run_started_from_a_file_resumes_without_it_and_refuses_another(study, synthetic_dir, tmp_path):
    start, out = model_file(study, tmp_path / "start.safetensors", seed=7), tmp_path / "run"
    blob = start.read_bytes()
    code, _, err = train(study, synthetic_dir, out, 1, "--init-from", start)
    assert code == 0, err
    moved = tmp_path / "moved.safetensors"
    start.rename(moved)  # the same weights elsewhere: the same start
    code, stdout, err = train(study, synthetic_dir, out, 2, "--init-from", moved, "--resume")
    assert code == 0, err
    assert "Epoch 2/2" in stdout and "Epoch 1/2" not in stdout
    moved.unlink()  # gone: the checkpoints hold all the run needs
    code, stdout, err = train(study, synthetic_dir, out, 3, "--init-from", moved, "--resume")
    assert code == 0, err
    assert "Epoch 3/3" in stdout and "Epoch 2/3" not in stdout
    code, stdout, err = train(study, synthetic_dir, out, 4, "--resume")  # nor must it be named again
    assert code == 0, err
    assert "Epoch 4/4" in stdout and "Epoch 3/4" not in stdout
    before = tree(out)
    other = model_file(study, tmp_path / "other.safetensors", seed=8)
    code, _, err = train(study, synthetic_dir, out, 5, "--init-from", other, "--resume")
    one_line_error(code, err, "belongs to a different configuration (init_from differ)")
    assert tree(out) == before
    # The reference: the same start trained 4 epochs without a stop, from a copy of the file.
    reference = tmp_path / "reference"
    (tmp_path / "copy.safetensors").write_bytes(blob)
    code, _, err = train(study, synthetic_dir, reference, 4, "--init-from", tmp_path / "copy.safetensors")
    assert code == 0, err
    assert history(out) == history(reference)


def test_a_resume_with_nothing_to_resume_still_needs_the_file(study, synthetic_dir, tmp_path):
    code, _, err = train(study, synthetic_dir, tmp_path / "run", 1, "--init-from", tmp_path / "gone.safetensors",
                         "--resume")
    one_line_error(code, err, "gone.safetensors", "is gone", "holds no checkpoint to resume from")


@pytest.fixture(scope="module")
def two_epochs(study, synthetic_dir, tmp_path_factory):
    """A finished run of 2 epochs: checkpoints of epochs 1 and 2."""
    out = tmp_path_factory.mktemp("two") / "run"
    code, _, err = train(study, synthetic_dir, out, 2)
    assert code == 0, err
    return out


@pytest.mark.parametrize("kind", ["folder", "link_to_folder"])
def test_something_else_under_an_old_checkpoints_name_does_not_break_the_rotation(
        study, synthetic_dir, two_epochs, tmp_path, kind):
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    old = out / "checkpoints" / "tiny-bn" / "epoch-0001.safetensors"
    old.unlink()
    old.mkdir() if kind == "folder" else old.symlink_to(old.parent)  # a link goes like a file; a folder stays
    code, stdout, err = train(study, synthetic_dir, out, 4, "--resume")  # two saves: epoch 1 falls out of the rotation
    assert code == 0, err
    assert "Epoch 3/4" in stdout and "Epoch 4/4" in stdout and "Is a directory" not in stdout + err
    left = sorted(p.name for p in old.parent.iterdir())
    assert left == (["epoch-0001.safetensors"] if kind == "folder" else []) + ["epoch-0003.safetensors",
                                                                                "epoch-0004.safetensors"]


@pytest.mark.parametrize("name", ["epoch-0003.safetensors", "epoch-0002.safetensors"])
def test_a_folder_where_a_coming_checkpoint_goes_is_refused_before_training(
        study, synthetic_dir, two_epochs, tmp_path, name):
    """epoch-0002 is the newest checkpoint's name: a folder there is skipped, epoch 1 restored, and epoch 2 must be
    written again."""
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    blocker = out / "checkpoints" / "tiny-bn" / name
    if blocker.exists():
        blocker.unlink()
    blocker.mkdir()
    (blocker / "mine.txt").write_text("a file of the user's")
    before = tree(out)
    code, stdout, err = train(study, synthetic_dir, out, 3, "--resume")
    epoch = 2 if name == "epoch-0002.safetensors" else 3
    one_line_error(code, err, name, f"is a folder where the checkpoint of epoch {epoch} must be written")
    assert "Is a directory" not in err and f"Epoch {epoch}/3" not in stdout  # found before any training
    assert tree(out) == before

