"""Jobs in worker processes, one per core: one process' numbers, its checkpoints, and nothing lost on a stop."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from normlab.errors import NormlabError
from normlab.experiments.config import StudyConfig
from normlab.experiments.reproduce import reproduce

CONFIG = StudyConfig(presets=("baseline", "bn-after"), seeds=2, epochs=2)
two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one worker per core needs two cores")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_give_one_process_numbers_and_checkpoints(small_data, tmp_path):
    epochs = []
    alone = reproduce(small_data, replace(CONFIG, workers=1))
    parallel = reproduce(small_data, replace(CONFIG, workers=2), tmp_path,
                         on_epoch=lambda preset, epoch, metrics, seconds: epochs.append((preset, epoch)))
    assert [(r["preset"], r["seed"]) for r in parallel["runs"]] == [(r["preset"], r["seed"]) for r in alone["runs"]]
    for a, b in zip(alone["runs"], parallel["runs"]):
        for metric in ("loss", "val_loss"):  # XLA rounds differently with one core than with two
            np.testing.assert_allclose(b["history"][metric], a["history"][metric], rtol=1e-4)
        np.testing.assert_allclose(b["test"]["loss"], a["test"]["loss"], rtol=1e-4)
        assert b["status"] == a["status"] == "ok"
    assert sorted(epochs) == sorted((p, e) for p in CONFIG.presets for e in range(2) for _ in range(2))
    for preset in CONFIG.presets:  # where the in-process path puts a group of seeds, so either can resume
        for seed in (0, 1):
            assert (tmp_path / "checkpoints" / preset / f"seeds-{seed}-{seed}" / "epoch-0002.safetensors").is_file()


def test_a_workers_error_is_the_studys_error(small_data, tmp_path):
    reproduce(small_data, replace(CONFIG, workers=2), tmp_path)
    with pytest.raises(NormlabError, match="different configuration"):
        reproduce(small_data, replace(CONFIG, workers=2, learning_rate=0.01), tmp_path, resume=True)
    assert not children(os.getpid())


def training_with_workers(out, env):
    """A reproduce run in a subprocess, its two workers each held at their first checkpoint write; with their pids.

    Held there (``NORMLAB_TEST_PAUSE_AT``), a worker is certainly mid-job when the test's signal comes: a job of
    this size trains in well under a second, so a worker signalled "a moment after" may have finished already.
    """
    stages = out.parent / "stages"
    proc = subprocess.Popen([sys.executable, "-m", "normlab.cli", "reproduce", "--presets", "bn-after", "--seeds", "2",
                             "--subset", "1500", "--epochs", "8", "--out", str(out)],
                            env={**env, "NORMLAB_TEST_STAGES": str(stages),
                                 "NORMLAB_TEST_PAUSE_AT": "checkpoint-write"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(workers := holding_at(stages, "checkpoint-write")) < 2:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert set(workers) == set(children(proc.pid))
    return proc, workers


def holding_at(stages, stage) -> list[int]:
    lines = stages.read_text().splitlines() if stages.exists() else []
    return sorted({int(line.split()[1]) for line in lines if line.split()[0] == stage})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache")), "PYTHONUNBUFFERED": "1"}


@two_cores
@pytest.mark.full_data
@pytest.mark.parametrize("target", ["parent", "worker"])
def test_an_interrupt_stops_parent_and_workers_and_resumes(tmp_path, env, target):
    out = tmp_path / "run"
    proc, workers = training_with_workers(out, env)
    # To one process alone, as `kill -INT` would: the parent must pass it on, or take a worker's as its own.
    os.kill(proc.pid if target == "parent" else workers[0], signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "Resume with: normlab reproduce" in err and "Traceback" not in err, err
    assert len(workers) == 2 and not any(alive(pid) for pid in workers)
    assert not list((out / "checkpoints").rglob(".*.tmp"))
    # the write each worker was held in was completed, then it stopped: one epoch on disk for each seed
    assert sorted(p.name for p in (out / "checkpoints").rglob("epoch-*.safetensors")) == ["epoch-0001.safetensors"] * 2
    resumed = subprocess.run([*proc.args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "results.json").is_file()


@two_cores
@pytest.mark.full_data
def test_killed_parent_leaves_no_orphan_training(tmp_path, env):
    proc, workers = training_with_workers(tmp_path / "run", env)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its killed parent"
        time.sleep(0.1)
    assert len(workers) == 2
