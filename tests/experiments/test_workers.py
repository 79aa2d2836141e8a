"""The one pool: jobs in worker processes pinned to their share of the cores, or here when there is one; a study's
and a sweep's jobs alike, one process' numbers and checkpoints, and no process left after a stop."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest

from normlab import runtime
from normlab.errors import NormlabError
from normlab.experiments import sweep, workers
from normlab.experiments.config import StudyConfig
from normlab.experiments.reproduce import reproduce
from normlab.experiments.study import make_config, parse

# Compiling, not training, is what a job of this size costs: one model throughout, and the sweep's first learning
# rate is the study's, so with ``compile_cache`` each program is compiled once per core count, not once per job.
CONFIG = StudyConfig(presets=("bn-after",), seeds=2, epochs=2)
STUDY = parse('name = "t"\n[config]\npresets = ["bn-after"]\nseeds = 2\nepochs = 1\n'
              '[sweep]\nlearning_rate = [0.001, 0.01]\n', "t.toml")
two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one worker per core needs two cores")


def where(job: dict, arrays: dict, send) -> dict:
    """A pool target (imported by name in the workers) that says where it runs; job ``fail`` fails."""
    send({"started": job["n"], "pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0))})
    if job.get("fail") == job["n"]:
        raise NormlabError(f"job {job['n']} cannot")
    return {"cache": jax.config.jax_compilation_cache_dir, "total": int(arrays["x"].sum())}


def noisy(job: dict, arrays: dict, send) -> dict:
    """Writes to fd 1 as native code does (XLA's --xla_dump_to=-, MKL_VERBOSE), around a message."""
    os.write(1, b"HloModule garbage\n{not json")
    send({"started": job["n"]})
    os.write(1, b"\n[0, {\"done\": 1}]\n")
    return {"total": int(arrays["x"].sum())}


def forges(job: dict, arrays: dict, send) -> dict:
    """Writes ``job["line"]`` into the protocol itself: its pipe's fd is the worker's first argument."""
    os.write(int(sys.argv[1]), job["line"].encode())
    return {}


def dies(job: dict, arrays: dict, send) -> dict:
    """Ends its worker as ``job["how"]`` says: killed as the OOM killer kills, or exiting after a last word."""
    if job["how"] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    print("the last word", file=sys.stderr, flush=True)
    os._exit(3)


def exhausted(job: dict, arrays: dict, send) -> dict:
    """Runs out of memory: XLA's RESOURCE_EXHAUSTED (4 TiB asked for), or Python's MemoryError."""
    if job["how"] == "xla":
        import jax.numpy as jnp
        jnp.zeros(1 << 40, jnp.float32).block_until_ready()
    raise MemoryError()


# Runs ``workers.run`` in a child, so a pool that hangs fails the test (its timeout) instead of blocking it; prints
# the messages, or the pool's one-line error.
POOL = ("import json, sys\nimport numpy as np\nfrom normlab.errors import NormlabError\n"
        "from normlab.experiments import workers\nmessages = {}\ntry:\n"
        "    workers.run(sys.argv[1], json.loads(sys.argv[2]), {'x': np.arange(10)}, 2,\n"
        "                lambda index, message: messages.setdefault(index, []).append(message), sys.argv[3])\n"
        "except NormlabError as error:\n    print(json.dumps({'error': str(error)}))\n"
        "else:\n    print(json.dumps(messages))\n")


def pool_in_child(target: str, jobs: list[dict], logs: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", POOL, target, json.dumps(jobs), str(logs)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 1, run.stderr
    return json.loads(run.stdout)


def pool(jobs: list[dict], tmp_path) -> dict[int, list[dict]]:
    messages: dict[int, list[dict]] = {}
    workers.run("test_workers:where", jobs, {"x": np.arange(10)}, 8,
                lambda index, message: messages.setdefault(index, []).append(message), tmp_path / "logs")
    return messages


@pytest.fixture
def targets(monkeypatch, tmp_path):
    """This module can be imported by name, here and in workers, which cache compiled code in a folder of ours."""
    monkeypatch.syspath_prepend(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "parent-cache"))  # workers cache iff we do
    yield
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One persistent compile cache for this module's in-process runs and pools (workers cache iff we do, in
    ``$XDG_CACHE_HOME/normlab/xla/cores-N``), so a program is compiled once per core count, not once per job;
    afterwards this process caches as it did before."""
    from jax.experimental.compilation_cache import compilation_cache
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        compilation_cache.reset_cache()  # JAX opens its cache once per process: at the folder named now
        runtime.enable_compile_cache()
        yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_cores_are_shared_out_as_evenly_as_possible(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: [0, 1, 2])
    assert workers.core_shares(2) == [[0, 1], [2]]
    monkeypatch.setattr(workers, "usable_cores", lambda: [0, 2, 3, 5, 6])
    assert workers.core_shares(3) == [[0, 2], [3, 5], [6]]
    assert workers.core_shares(5) == [[0], [2], [3], [5], [6]]


def test_one_job_runs_here_on_every_core(targets, tmp_path):
    assert pool([{"n": 0}], tmp_path) == {0: [{"started": 0, "pid": os.getpid(), "cores": workers.usable_cores()},
                                              {"done": {"cache": str(tmp_path / "parent-cache"), "total": 45}}]}
    assert not children(os.getpid())


@two_cores
def test_jobs_go_to_workers_pinned_to_disjoint_shares_with_their_own_compile_cache(targets, tmp_path):
    messages = pool([{"n": n, "fail": 1} for n in range(4)], tmp_path)
    assert sorted(messages) == [0, 1, 2, 3] and messages[1][1] == {"error": "job 1 cannot"}
    started = {n: m[0] for n, m in messages.items()}
    # jobs 0 and 1 went out at once, one to each worker; a user error ends a job, not its worker
    assert started[0]["pid"] != started[1]["pid"] and {s["pid"] for s in started.values()} == {
        started[0]["pid"], started[1]["pid"]} and os.getpid() not in {s["pid"] for s in started.values()}
    assert sorted({tuple(s["cores"]) for s in started.values()}) == [tuple(share) for share in workers.core_shares(2)]
    for n in (0, 2, 3):  # the compile cache, enabled after pinning, is that of programs compiled for that many cores
        assert messages[n][1]["done"]["cache"].endswith(f"cores-{len(started[n]['cores'])}")
        assert messages[n][1]["done"]["total"] == 45
    assert not children(os.getpid())


@two_cores
def test_what_a_worker_writes_to_its_stdout_never_reaches_the_protocol(targets, tmp_path):
    messages = pool_in_child("test_workers:noisy", [{"n": 0}, {"n": 1}], tmp_path / "logs")
    assert messages == {str(n): [{"started": n}, {"done": {"total": 45}}] for n in (0, 1)}
    assert all("HloModule garbage" in (tmp_path / "logs" / f"worker-{i}.log").read_text() for i in (0, 1))


@two_cores
@pytest.mark.parametrize("line", ["{not json\n", "[0, {\"done\": 1}, 2]\n", "[7, {\"done\": 1}]\n", "\"text\"\n"])
def test_a_malformed_message_stops_the_pool_in_one_line(targets, tmp_path, line):
    error = pool_in_child("test_workers:forges", [{"line": line}, {"line": line}], tmp_path / "logs")["error"]
    assert "not a message of the pool" in error and str(tmp_path / "logs" / "worker-") in error, error
    assert "\n" not in error


@two_cores
@pytest.mark.parametrize("how,says", [("sigkill", "killed by SIGKILL, most likely by the kernel's out-of-memory "
                                                   "killer: ask for fewer workers"),
                                      ("exit", "stopped unexpectedly (exit 3: the last word)")])
def test_a_worker_that_dies_is_named_with_what_ended_it(targets, tmp_path, how, says):
    error = pool_in_child("test_workers:dies", [{"how": how}, {"how": how}], tmp_path / "logs")["error"]
    assert says in error and str(tmp_path / "logs" / "worker-") in error, error


@two_cores
@pytest.mark.parametrize("how,says", [("xla", "RESOURCE_EXHAUSTED"), ("python", "a memory allocation failed")])
def test_a_worker_out_of_memory_is_its_jobs_one_line_error(targets, tmp_path, how, says):
    messages = pool_in_child("test_workers:exhausted", [{"how": how}, {"how": how}], tmp_path / "logs")
    for n in ("0", "1"):
        [last] = messages[n]
        assert last["error"].startswith("out of memory (") and says in last["error"], last
        assert "a smaller batch size" in last["error"] and "\n" not in last["error"]


@two_cores
@pytest.mark.full_data
def test_a_study_runs_while_xla_dumps_its_programs_to_stdout(tmp_path, env):
    """``--xla_dump_to=-``: XLA writes every compiled program's HLO to fd 1, in the workers too."""
    study = tmp_path / "two.toml"
    study.write_text('[config]\npresets = ["bn-after"]\nseeds = 2\nepochs = 1\nsubset = 500\n')
    out = tmp_path / "sweep"
    run = subprocess.run([sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out), "--workers", "2"],
                         env={**env, "XLA_FLAGS": "--xla_dump_to=-"}, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)  # XLA also writes into ./-/
    assert run.returncode == 0, run.stderr[-2000:]
    assert all("HloModule" in log.read_text() for log in (out / "logs").glob("worker-*.log"))
    assert len(list((out / "logs").glob("worker-*.log"))) == 2
    [manifest] = out.glob("trials/*/manifest.json")
    assert json.loads(manifest.read_text())["status"] == "done"


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


def test_workers_give_one_process_numbers_and_checkpoints(small_data, tmp_path, compile_cache):
    epochs = []
    alone = reproduce(small_data, replace(CONFIG, workers=1))
    parallel = reproduce(small_data, replace(CONFIG, workers=2), tmp_path, on_epoch=epochs.append)
    assert [(r["preset"], r["seed"]) for r in parallel["runs"]] == [(r["preset"], r["seed"]) for r in alone["runs"]]
    for a, b in zip(alone["runs"], parallel["runs"]):
        for metric in ("loss", "val_loss"):  # XLA rounds differently with one core than with two
            np.testing.assert_allclose(b["history"][metric], a["history"][metric], rtol=1e-4)
        np.testing.assert_allclose(b["test"]["loss"], a["test"]["loss"], rtol=1e-4)
        assert b["status"] == a["status"] == "ok"
    # every epoch of every job, then its test, each event with the job it belongs to
    assert sorted((e.job.preset, e.seeds, e.epoch, e.stage) for e in epochs) == sorted(
        (p, [seed], epoch, stage) for p in CONFIG.presets for seed in (0, 1)
        for epoch, stage in ((1, "trained"), (2, "trained"), (2, "test")))
    assert all(e.job.folder == tmp_path and e.job.trial is None for e in epochs)
    for preset in CONFIG.presets:  # where the in-process path puts a group of seeds, so either can resume
        for seed in (0, 1):
            assert (tmp_path / "checkpoints" / preset / f"seeds-{seed}-{seed}" / "epoch-0002.safetensors").is_file()


def test_a_workers_error_is_the_studys_error(small_data, tmp_path, compile_cache):
    reproduce(small_data, replace(CONFIG, workers=1), tmp_path)  # checkpoints where a pool's jobs look for them
    with pytest.raises(NormlabError, match="different configuration"):
        reproduce(small_data, replace(CONFIG, workers=2, learning_rate=0.01), tmp_path, resume=True)
    assert not children(os.getpid())


def test_a_sweeps_trials_are_jobs_of_one_pool(small_data, tmp_path, compile_cache):
    events, said = [], []
    assert sweep.run(STUDY, tmp_path, sweep.trials(STUDY), small_data, 2, events.append, said.append) == []
    for tid, overrides in sweep.trials(STUDY):
        trial = tmp_path / "trials" / tid
        assert json.loads((trial / "manifest.json").read_text())["status"] == "done"
        runs = json.loads((trial / "results.json").read_text())["runs"]
        assert [(r["seed"], r["setting"]) for r in runs] == [(s, {"preset": "bn-after", **overrides}) for s in (0, 1)]
        for seed in (0, 1):  # where `reproduce` puts a job, so a trial resumes either way
            assert (trial / "checkpoints" / "bn-after" / f"seeds-{seed}-{seed}" / "epoch-0001.safetensors").is_file()
    assert sorted((e.job.trial, e.seeds, e.stage) for e in events) == sorted(
        (tid, [seed], stage) for tid, _ in sweep.trials(STUDY) for seed in (0, 1) for stage in ("trained", "test"))
    assert sorted(said) == sorted(f"trial {tid} done" for tid, _ in sweep.trials(STUDY))


def test_a_failed_trial_leaves_the_others_to_finish(small_data, tmp_path, compile_cache):
    (first, overrides), (second, _) = sweep.trials(STUDY)
    # two epochs in the first trial's checkpoints, more than its study asks for: its job fails, and only it
    reproduce(small_data, replace(make_config(STUDY.base, overrides, "test"), epochs=2, workers=1),
              tmp_path / "trials" / first)
    said = []
    assert sweep.run(STUDY, tmp_path, sweep.trials(STUDY), small_data, 2, None, said.append) == [first]
    manifests = {tid: json.loads((tmp_path / "trials" / tid / "manifest.json").read_text()) for tid in (first, second)}
    assert manifests[first]["status"] == "failed" and "already holds 2 epochs" in manifests[first]["error"]
    assert manifests[second]["status"] == "done"
    assert f"trial {second} done" in said and any(line.startswith(f"trial {first} failed: ") for line in said)


def held_at_checkpoint(argv, out, env, count=2):
    """``normlab ARGV`` in a subprocess, ``count`` workers each held at their first checkpoint write; with their pids.

    Held there (``NORMLAB_TEST_PAUSE_AT``), a worker is certainly mid-job when the test's signal comes: a job of
    this size trains in well under a second, so a worker signalled "a moment after" may have finished already.
    """
    stages = out.parent / "stages"
    proc = subprocess.Popen([sys.executable, "-m", "normlab.cli", *argv, "--out", str(out)],
                            env={**env, "NORMLAB_TEST_STAGES": str(stages),
                                 "NORMLAB_TEST_PAUSE_AT": "checkpoint-write"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(pids := holding_at(stages, "checkpoint-write")) < count:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert set(pids) == set(children(proc.pid))
    return proc, pids


def training_with_workers(out, env):
    """Held at epoch 1 of 2: the resumed run has an epoch left to train. The sweep below trains the same programs."""
    return held_at_checkpoint(["reproduce", "--presets", "bn-after", "--seeds", "2", "--subset", "500", "--epochs",
                               "2"], out, env)


def holding_at(stages, stage) -> list[int]:
    lines = stages.read_text().splitlines() if stages.exists() else []
    return sorted({int(line.split()[1]) for line in lines if line.split()[0] == stage})


@pytest.fixture(scope="module")
def env(cli_env):
    """The session's compile cache (``conftest.cli_env``): the CLI and its workers compile each program once, and
    bn-after's programs at these sizes are in it from other tests already."""
    return {**cli_env, "PYTHONUNBUFFERED": "1"}


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


@two_cores
@pytest.mark.full_data
def test_an_interrupted_sweep_stops_every_worker_and_resumes(tmp_path, env):
    study = tmp_path / "two.toml"
    study.write_text('[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 2\nsubset = 500\n'
                     '[sweep]\nlearning_rate = [0.001, 0.01]\n')
    out = tmp_path / "sweep"
    proc, pids = held_at_checkpoint(["run", str(study), "--workers", "2"], out, env)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and len(err.splitlines()) == 1 and "Resume with the same command" in err, err
    assert not any(alive(pid) for pid in pids) and not list(out.rglob(".*.tmp"))
    manifests = sorted(out.glob("trials/*/manifest.json"))
    assert [json.loads(m.read_text())["status"] for m in manifests] == ["interrupted"] * 2
    rerun = subprocess.run([sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out), "--workers", "2"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "0 already done, 2 to run" in " ".join(rerun.stdout.split()), rerun.stderr
    assert [json.loads(m.read_text())["status"] for m in manifests] == ["done"] * 2
    for trial in out.glob("trials/*/"):  # resumed from epoch 1; TensorBoard has both epochs, in one file
        assert json.loads((trial / "results.json").read_text())["runs"][0]["time"]["resumed_from_epoch"] == 1
        assert len(list((trial / "tensorboard" / "bn-after" / "seed0").glob("events.out.tfevents.*"))) == 1
