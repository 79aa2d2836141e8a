"""Real training in a subprocess, killed and interrupted: nothing finished is lost, and resuming is exact."""

import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import safetensors.numpy

pytestmark = pytest.mark.full_data
EPOCHS = 6
# test_signals.py's subset: the same programs, which the session's compile cache then holds for both
TRAIN = ["train", "bn-after", "--subset", "2000", "--epochs", str(EPOCHS), "--seed", "3"]


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


def start(out, env, *extra, delay_s=0.0):
    env = {**env, "NORMLAB_FAULT_WRITE_DELAY_S": str(delay_s)}
    return subprocess.Popen([sys.executable, "-m", "normlab.cli", *TRAIN, "--out", str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_arrays(out):
    return safetensors.numpy.load_file(out / "checkpoints" / "bn-after" / f"epoch-{EPOCHS:04d}.safetensors")


def wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out waiting for the training process"
        time.sleep(0.005)
    return True


def checkpoint_epochs(out):
    folder = out / "checkpoints" / "bn-after"
    return [int(p.name[6:10]) for p in folder.glob("epoch-*.safetensors")] if folder.is_dir() else []


def test_sigkill_at_random_points_then_resume_is_bitwise_identical(tmp_path, env, finished):
    expected = final_arrays(finished)

    out, rng, kills, mid_write = tmp_path / "killed", random.Random(1234), 0, 0
    # Each round resumes and is SIGKILLed: after epoch k is on disk plus a random delay, or the moment a
    # checkpoint's temp file exists (a kill in the middle of a write; the write is slowed to widen that window).
    plan = [("after", 1), ("write", None), ("after", 2), ("write", None), ("after", 4)]
    for how, epoch in plan:
        proc = start(out, env, "--resume", delay_s=0.3)
        folder = out / "checkpoints" / "bn-after"
        if how == "write":
            hit = wait_for(lambda: any(folder.glob(".epoch-*.tmp")) if folder.is_dir() else False, proc)
        else:
            hit = wait_for(lambda: max(checkpoint_epochs(out), default=0) >= epoch, proc)
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            mid_write += how == "write" and hit
        proc.wait(timeout=60)
    assert kills >= 4 and mid_write >= 1
    finish = start(out, env, "--resume")
    assert finish.wait(timeout=300) == 0, finish.stderr.read()
    resumed = final_arrays(out)
    assert sorted(resumed) == sorted(expected)
    for name in expected:
        assert resumed[name].tobytes() == expected[name].tobytes(), name


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_says_how_to_resume(tmp_path, env, signum, code):
    out = tmp_path / "run"
    proc = start(out, env, delay_s=0.2)
    assert wait_for(lambda: bool(checkpoint_epochs(out)), proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Resume with: normlab train" in err and "--resume" in err and "Traceback" not in err
    assert not list((out / "checkpoints" / "bn-after").glob(".*.tmp"))
    resumed = subprocess.run([sys.executable, "-m", "normlab.cli", *TRAIN, "--out", str(out), "--resume"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_resume_skips_a_damaged_checkpoint_and_refuses_other_options(tmp_path, env, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    run = lambda *extra: subprocess.run([sys.executable, "-m", "normlab.cli", *TRAIN, "--out", str(out), *extra],
                                        env=env, capture_output=True, text=True, timeout=300)
    newest = out / "checkpoints" / "bn-after" / f"epoch-{EPOCHS:04d}.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = run("--resume")
    assert resumed.returncode == 0 and "skipping damaged checkpoint" in resumed.stdout
    assert f"Epoch {EPOCHS}/{EPOCHS}" in resumed.stdout and "Epoch 1/" not in resumed.stdout
    refused = run("--resume", "--lr", "0.01")
    assert refused.returncode == 2 and "different configuration" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
