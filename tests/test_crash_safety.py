"""Real training in a subprocess, killed and interrupted: nothing finished is lost, and resuming is exact.

Every signal lands where the test planned it, on any machine: at a stage the process is held at
(``NORMLAB_TEST_PAUSE_AT``, ``normlab.testpoints``), or inside a checkpoint write slowed to a minute between the
whole temp file and its rename (``NORMLAB_FAULT_WRITE_DELAY_S``). A signal sent "a moment after" an epoch may
find the run finished on a fast machine, or not yet there on a busy one.
"""

import shutil
import signal
import subprocess
import sys
import time

import pytest
import safetensors.numpy

from clitools import session_cache, start_paused  # noqa: F401

pytestmark = pytest.mark.full_data
EPOCHS = 6
# test_signals.py's subset: the same programs, which the session's compile cache then holds for both
TRAIN = ["train", "bn-after", "--subset", "2000", "--seed", "3"]
HELD_WRITE_S = 60  # the longest write delay testpoints allows: a kill sent on seeing the temp file lands in it


@pytest.fixture(scope="module")
def env(cli_env):
    """The session's compile cache (conftest.cli_env), so each restart compiles from disk in about a second."""
    return {**cli_env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, env):
    """One uninterrupted run: the reference a killed and resumed run must equal, and (copied) a run to damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = start(out, env)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return out


def train(out, epochs=EPOCHS, resume=False) -> list[str]:
    return [*TRAIN, "--epochs", str(epochs), "--out", str(out), *(["--resume"] if resume else [])]


def start(out, env, epochs=EPOCHS, resume=False, **test_points):
    return subprocess.Popen([sys.executable, "-m", "normlab.cli", *train(out, epochs, resume)],
                            env={**env, **test_points}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_arrays(out):
    return safetensors.numpy.load_file(out / "checkpoints" / "bn-after" / f"epoch-{EPOCHS:04d}.safetensors")


def wait_for(predicate, proc, timeout=300):
    """Until ``predicate()``, while ``proc`` runs: a deadline for a hung process, not a measure of time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited ({proc.returncode}) first: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for the training process"
        time.sleep(0.01)


def checkpoint_epochs(out):
    folder = out / "checkpoints" / "bn-after"
    return sorted(int(p.name[6:10]) for p in folder.glob("epoch-*.safetensors")) if folder.is_dir() else []


def killed(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # it was held, so alive: the kill landed


# (how, where, --epochs of the round, the checkpoints on disk after it). Each round resumes the run folder.
# A kill changes the disk only by what it leaves unwritten, so these are its kinds of moment: in a first write, with
# an epoch trained but not yet written, in a write with older checkpoints kept, and right after a restore.
ROUNDS = [
    ("write", 1, EPOCHS, []),                     # in epoch 1's checkpoint write: a temp file, no rename
    ("finish", None, 2, [1, 2]),                  # runs on to 2 epochs (resuming with more epochs is allowed)
    ("pause", "checkpoint-write", EPOCHS, [1, 2]),  # epoch 3 trained, its checkpoint not begun
    ("write", 3, EPOCHS, [1, 2]),                 # in epoch 3's write, two checkpoints kept before it
    ("finish", None, 4, [3, 4]),                  # the stale temp file removed, epochs 1-2 pruned
    ("pause", "train", EPOCHS, [3, 4]),           # restored from epoch 4, before epoch 5
]


def test_sigkill_at_every_kind_of_moment_then_resume_is_bitwise_identical(tmp_path, env, finished):
    out = tmp_path / "killed"
    folder = out / "checkpoints" / "bn-after"
    for how, where, epochs, on_disk in ROUNDS:
        if how == "pause":
            killed(start_paused(train(out, epochs, resume=True), tmp_path, where))
        elif how == "write":
            proc = start(out, env, epochs, resume=True, NORMLAB_FAULT_WRITE_DELAY_S=str(HELD_WRITE_S))
            temps = lambda: list(folder.glob(f".epoch-{where:04d}.safetensors.*.tmp"))  # atomic's random temp name
            wait_for(temps, proc)
            killed(proc)
            assert temps()  # killed before the rename: a torn write for the resume to ignore
        else:
            done = start(out, env, epochs, resume=True)
            _, err = done.communicate(timeout=300)
            assert done.returncode == 0, err
        assert checkpoint_epochs(out) == on_disk, (how, where)
    finish = start(out, env, resume=True)
    _, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err
    resumed, expected = final_arrays(out), final_arrays(finished)
    assert sorted(resumed) == sorted(expected)
    for name in expected:
        assert resumed[name].tobytes() == expected[name].tobytes(), name


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_says_how_to_resume(tmp_path, env, signum, code):
    """The signal comes while the first checkpoint is being written (held there): the write completes, then the
    run stops and says how to carry on."""
    out = tmp_path / "run"
    proc = start_paused(train(out), tmp_path, "checkpoint-write")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Resume with: normlab train" in err and "--resume" in err and "Traceback" not in err
    assert checkpoint_epochs(out) == [1] and not list((out / "checkpoints" / "bn-after").glob(".*.tmp"))
    resumed = subprocess.run([sys.executable, "-m", "normlab.cli", *train(out, resume=True)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_resume_skips_a_damaged_checkpoint_and_refuses_other_options(tmp_path, env, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    run = lambda *extra: subprocess.run([sys.executable, "-m", "normlab.cli", *train(out), *extra],
                                        env=env, capture_output=True, text=True, timeout=300)
    newest = out / "checkpoints" / "bn-after" / f"epoch-{EPOCHS:04d}.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = run("--resume")
    assert resumed.returncode == 0 and "skipping damaged checkpoint" in resumed.stdout
    assert f"Epoch {EPOCHS}/{EPOCHS}" in resumed.stdout and "Epoch 1/" not in resumed.stdout
    refused = run("--resume", "--lr", "0.01")
    assert refused.returncode == 2 and "different configuration" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
