"""SIGINT/SIGTERM at every moment of a real run: exit 130/143, one true line, no core dump, nothing half-written.

Each case starts `normlab train` with test points on (``normlab.testpoints``): the process names every stage it
reaches in a file, and the test sends its signal once the stage shows up there — observable state, no sleeps.
At the stages marked *pause* the process waits for the signal right there, so it lands exactly at that moment
(inside the held checkpoint write and report as well); at the others it lands while the stage runs (imports,
the XLA compilation, the training loop), and the process waits at the report should the signal be late (a busy
machine may hold the test back longer than the run takes), so it never finishes before its signal.
``NORMLAB_SIGNAL_REPS`` repetitions per stage: 1 in CI, 10 in `make fuzz`, alternating SIGINT and SIGTERM.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import cache_home
from normlab.train import checkpoint

pytestmark = [pytest.mark.full_data, pytest.mark.fuzz]
REPS = int(os.environ.get("NORMLAB_SIGNAL_REPS", "1"))
TRAIN = ["train", "bn-after", "--subset", "2000", "--seed", "1"]
# stage -> (pause there?, needs a run folder with a finished epoch to resume from?)
MOMENTS = {
    "start": (False, False),
    "data": (True, False),
    "checkpoint-read": (True, True),
    "compile": (False, False),
    "train": (False, False),
    "checkpoint-write": (True, False),
    "report": (True, False),
}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, cli_env):
    """A finished one-epoch run, copied for each case that resumes (the checkpoint-read moment)."""
    out = tmp_path_factory.mktemp("template") / "run"
    done = subprocess.run([sys.executable, "-m", "normlab.cli", *TRAIN, "--epochs", "1", "--out", str(out)],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def wait_for_stage(stages, stage, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while not (stages.exists() and any(line.split()[0] == stage for line in stages.read_text().splitlines())):
        assert proc.poll() is None, f"exited ({proc.returncode}) before reaching {stage}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"never reached {stage}"
        time.sleep(0.005)


def cases():
    """Signals alternate over stages and repetitions, so even one repetition sends both SIGINT and SIGTERM."""
    return [pytest.param(stage, (signal.SIGINT, signal.SIGTERM)[(index + rep) % 2], id=f"{stage}-{rep}")
            for index, stage in enumerate(MOMENTS) for rep in range(REPS)]


@pytest.mark.parametrize("stage,signum", cases())
def test_a_signal_at_any_moment(tmp_path, cli_env, one_epoch_run, stage, signum):
    pause, resumes = MOMENTS[stage]
    out, stages = tmp_path / "run", tmp_path / "stages"
    if resumes:
        shutil.copytree(one_epoch_run, out)
    # "compile" needs a cold cache so the signal lands inside XLA's compilation, not after a 1 s cache load
    env = {**cli_env, "NORMLAB_TEST_STAGES": str(stages), "PYTHONUNBUFFERED": "1",
           **({"XDG_CACHE_HOME": str(cache_home(tmp_path / "cold"))} if stage == "compile" else {}),
           "NORMLAB_TEST_PAUSE_AT": stage if pause else "report"}
    argv = [*TRAIN, "--epochs", "2", "--out", str(out), *(["--resume"] if resumes else [])]
    proc = subprocess.Popen([sys.executable, "-m", "normlab.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_stage(stages, stage, proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=600)

    assert proc.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"normlab: interrupted by {signal.Signals(signum).name}; "), stderr
    message = lines[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else True
    saved = sorted(out.rglob("epoch-*.safetensors")) if out.exists() else []
    for path in saved:
        checkpoint.read(path, 64 << 20)  # every checkpoint on disk is whole
    # The message is true: it names a checkpoint only when there is one, and the command that carries on.
    if saved:
        assert "finished epochs are checkpointed" in message or "the run had finished" in message, message
        assert "--resume" in message or "the run had finished" in message
    else:
        assert "nothing was" in message, message
    if stage == "checkpoint-read":
        assert "skipping damaged checkpoint" not in stdout and "Epoch 2/2" not in stdout  # not taken for damage
    if stage == "checkpoint-write":
        assert [p.name for p in saved] == ["epoch-0001.safetensors"]  # the write it interrupted was completed
    if stage == "report" or (not resumes and (out / "results.json").exists()):
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        assert results["runs"][0]["history"]["val_accuracy"]
        assert (out / "report.md").read_text(encoding="utf-8").endswith("\n")
        assert "the run had finished" in message
