"""`normlab run --engine ray`: a sweep's jobs as Ray tasks on a local Ray instance, against the local pool; and
what goes wrong around Ray: an --address where no Ray head answers, a signal meanwhile, a sweep stopped or killed.

The sweep mixes one- and two-device trials: a Ray worker must not carry one job's JAX (and its device count) into
the next job. The processes of a sweep's Ray instance are found by a mark the test puts in the sweep's
environment, which all of them inherit (read from /proc, the kernel's view)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agreement import assert_counts_agree

pytest.importorskip("ray")

STUDY = """name = "ray-check"
[config]
presets = ["bn-after"]
seeds = 1
epochs = 1
subset = 320
[sweep]
learning_rate = [0.001, 0.01]
devices = [1, 2]
"""


def sweep(study, out, env, *engine):
    done = subprocess.run([sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out), *engine],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {path.parent.name: json.loads(path.read_text()) for path in sorted((out / "trials").glob("*/results.json"))}


@pytest.mark.full_data
def test_a_sweep_on_ray_writes_what_the_local_engine_writes(tmp_path, cli_env):
    study = tmp_path / "ray-check.toml"
    study.write_text(STUDY)
    local, ray = sweep(study, tmp_path / "local", cli_env), sweep(study, tmp_path / "ray", cli_env, "--engine", "ray")
    assert sorted(ray) == sorted(local) and len(ray) == 4
    for trial, results in ray.items():
        assert json.loads((tmp_path / "ray" / "trials" / trial / "manifest.json").read_text())["status"] == "done"
        assert (tmp_path / "ray" / "trials" / trial / "report.md").is_file()
        want, got = local[trial]["runs"], results["runs"]
        assert [(r["preset"], r["seed"], r["setting"]) for r in got] == [(r["preset"], r["seed"], r["setting"])
                                                                          for r in want]
        for mine, theirs in zip(got, want):  # processes with other core counts: equal to float32 rounding
            for metric in ("loss", "val_loss"):
                np.testing.assert_allclose(mine["history"][metric], theirs["history"][metric], rtol=1e-4, atol=1e-5)
            for metric, n in (("accuracy", 320), ("val_accuracy", 5000)):  # counts rounding may tip (agreement)
                for a, b in zip(mine["history"][metric], theirs["history"][metric], strict=True):
                    assert_counts_agree(a, b, n)
    assert (tmp_path / "ray" / "report.html").is_file()


def test_ray_options_are_checked_first(tmp_path, cli_env):
    done = subprocess.run([sys.executable, "-m", "normlab.cli", "run", "seed", "--address", "auto",
                           "--out", str(tmp_path / "x")], env=cli_env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "normlab: error: --address is the address of a Ray cluster: it needs --engine ray\n"


TINY = 'name = "tiny"\n[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 1\nsubset = 320\n'
BOUND_S = 120  # no sweep here needs this long: a hang fails instead of stalling the suite


@pytest.fixture
def sweep_args(tmp_path, synthetic_dir):
    (tmp_path / "tiny.toml").write_text(TINY)
    return ["run", str(tmp_path / "tiny.toml"), "--engine", "ray", "--out", str(tmp_path / "sweep"),
            "--data-dir", str(synthetic_dir), "--no-verify"]


@pytest.fixture
def impostor():
    """``impostor(kind)``: a loopback server that is no Ray head, ``silent`` (accepts, never answers) or ``http``
    (answers HTTP/1); its port, and an event set once it has accepted a connection."""
    servers = []

    def start(kind):
        server = socket.create_server(("127.0.0.1", 0))
        accepted, held = threading.Event(), []

        def serve():
            while True:
                try:
                    peer, _ = server.accept()
                except OSError:  # closed at the end of the test
                    return
                held.append(peer)
                accepted.set()
                if kind == "http":
                    peer.recv(4096)
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    peer.close()

        threading.Thread(target=serve, daemon=True).start()
        servers.append((server, held))
        return server.getsockname()[1], accepted

    yield start
    for server, held in servers:
        server.close()
        for peer in held:
            peer.close()


@pytest.mark.parametrize("kind", ["silent", "http"])
def test_an_address_where_no_ray_head_answers_is_one_line_within_seconds(sweep_args, impostor, cli_env, kind):
    """Ray retried such an address for minutes, ignoring Ctrl-C."""
    port, _ = impostor(kind)
    done = subprocess.run([sys.executable, "-m", "normlab.cli", *sweep_args, "--address", f"127.0.0.1:{port}"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("normlab: error: Ray: ") and f"127.0.0.1:{port}" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_sigint_while_reaching_an_address_stops_at_once(sweep_args, impostor, cli_env):
    port, accepted = impostor("silent")
    sweep = subprocess.Popen([sys.executable, "-m", "normlab.cli", *sweep_args, "--address", f"127.0.0.1:{port}"],
                             env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert accepted.wait(BOUND_S), "the sweep never called the address"
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=30)
    finally:
        sweep.kill()
    assert sweep.returncode == 130 and len(err.splitlines()) == 1, err
    assert err.startswith("normlab: interrupted by SIGINT;"), err


def processes() -> dict[int, tuple[str, int, int]]:
    """Every process now: pid -> (state, parent's pid, start time), from /proc/PID/stat (the kernel's view)."""
    found = {}
    for name in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()
            found[int(name)] = (fields[0], int(fields[1]), int(fields[19]))
        except (OSError, ValueError):  # not a process, or gone
            pass
    return found


def descendants(root: int) -> set[tuple[int, int]]:
    """``root``'s descendants now, each as (pid, start time): a pid alone may be another process's later."""
    table, found, todo = processes(), set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (_, ppid, start) in table.items():
            if ppid == parent:
                found.add((pid, start))
                todo.append(pid)
    return found


def still_there(noted: set[tuple[int, int]], within: float = 60) -> set[tuple[int, int]]:
    """Those of ``noted`` still running (not ended, nor a zombie) after ``within`` seconds, or as soon as none is."""
    deadline = time.monotonic() + within
    while True:
        table = processes()
        left = {(pid, start) for pid, start in noted
                if pid in table and table[pid][2] == start and table[pid][0] != "Z"}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def instance(sweep_args, cli_env, tmp_path):
    """A sweep on a local Ray instance, once a Ray worker compiles (its stage), and the processes it has then:
    Ray's head, its agents, its workers. Whatever of them a test leaves is killed."""
    stages = tmp_path / "stages"
    sweep = subprocess.Popen([sys.executable, "-m", "normlab.cli", *sweep_args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**cli_env, "NORMLAB_TEST_STAGES": str(stages)})
    deadline = time.monotonic() + BOUND_S
    while not (stages.exists() and "compile" in stages.read_text().split()[::2]):
        assert sweep.poll() is None, sweep.communicate()[1]
        assert time.monotonic() < deadline, "no Ray worker compiled"
        time.sleep(0.05)
    sweep.ray = descendants(sweep.pid)
    assert any(Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::DashboardAgent")
               for pid, _ in sweep.ray), "no Ray agent among the sweep's processes"
    yield sweep
    sweep.kill()
    sweep.communicate()
    for pid, _ in still_there(sweep.ray, within=0):
        os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_a_ray_sweep_with_its_note_and_its_instance(instance):
    """Ray's init had taken SIGTERM over (its core worker's C++ handler aborted: exit 134, a stack trace)."""
    instance.send_signal(signal.SIGTERM)
    _, err = instance.communicate(timeout=60)
    assert instance.returncode == 143 and err.startswith("normlab: interrupted by SIGTERM; finished trials"), err
    assert still_there(instance.ray) == set()


def test_a_killed_sweep_leaves_no_process_of_its_ray_instance(instance):
    """SIGKILL: no handler runs; Ray's head processes share the sweep's fate, but its agents outlived it."""
    instance.kill()
    instance.communicate(timeout=60)
    assert still_there(instance.ray) == set()
