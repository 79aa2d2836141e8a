"""A run over several processes (`normlab train --processes`) on loopback, against what a network, a user and
the kernel do to it: a port in other digits, strangers at the rendezvous, mismatched or doubled processes, one
process killed, SIGTERM once JAX has joined, and where its services listen (read from the kernel's socket tables).

The processes log their stages (``normlab.testpoints``): the tests wait for those, never for time, and every
wait and every process has a bound, so a hang fails instead of blocking the suite. Synthetic data, 500 rows.
"""

import ipaddress
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import free_port, normlab, one_line_error, session_cache  # noqa: F401 - session_cache: autouse

BOUND_S = 120  # no process here needs this long; a hang fails here instead of stalling the suite


@pytest.fixture
def run(tmp_path, synthetic_dir):
    """Starts the processes of one run (``run(index, count=2, pause=STAGE, out=FOLDER, options=(...), env={})``)
    on one free loopback port; each logs its stages to its own file. Whatever a test leaves running is killed."""
    port, started = free_port(), []

    def start(index, count=2, pause=None, out=None, options=(), env=None):
        stages = tmp_path / f"stages-{len(started)}"
        command = [sys.executable, "-m", "normlab.cli", "train", "bn-after", "--subset", "500", "--epochs", "2",
                   "--data-dir", str(synthetic_dir), "--no-verify", "--coordinator", f"127.0.0.1:{port}",
                   "--processes", str(count), "--process-id", str(index), "--join-timeout", "100",
                   "--out", str(out or tmp_path / f"out-{index}"), *options]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                   env={**os.environ, "NORMLAB_TEST_STAGES": str(stages), **(env or {}),
                                        **({"NORMLAB_TEST_PAUSE_AT": pause} if pause else {})})
        process.stages, process.port = stages, port
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def reached(process, stage: str, times: int = 1) -> None:
    """Wait until ``process`` has logged ``stage`` ``times`` times."""
    deadline = time.monotonic() + BOUND_S
    while not (process.stages.exists() and process.stages.read_text().split()[::2].count(stage) >= times):
        assert process.poll() is None, f"exited {process.returncode} before {stage}: {process.communicate()[1]}"
        assert time.monotonic() < deadline, f"never reached {stage}"
        time.sleep(0.01)


def ended(process, within: float = BOUND_S) -> tuple[int, str]:
    """Its exit code and stderr, once it has ended (within ``within`` seconds, or the test fails)."""
    try:
        _, err = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {within} s")
    return process.returncode, err.strip()


def connect(process) -> socket.socket:
    """A connection to ``process``'s port, once it listens (it retries until then, like a port scanner)."""
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            return socket.create_connection(("127.0.0.1", process.port), timeout=BOUND_S)
        except ConnectionRefusedError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "never listened"
            time.sleep(0.01)


def until_closed(peer: socket.socket) -> bytes:
    """All ``peer`` sends until it closes the connection."""
    data = b""
    while chunk := peer.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("port", ["١٢٣٤", "²³", "65536", ""])
def test_a_port_is_ascii_digits_in_range(tmp_path, port):
    """Arabic-Indic and superscript digits pass ``str.isdigit``, and no socket takes them: ``int`` read the first
    as 1234 (a port other than the one written, and JAX got the text) and crashed on the second."""
    code, _, err = normlab("train", "bn-after", "--coordinator", f"127.0.0.1:{port}", "--processes", "2",
                           "--process-id", "0", "--join-timeout", "1", "--out", tmp_path / "x", timeout=BOUND_S)
    one_line_error(code, err, "--coordinator must be HOST:PORT")


def test_strangers_other_settings_and_a_second_id_are_refused_not_counted(run, tmp_path):
    """At process 0's rendezvous (3 processes): a port scanner's byte, a browser's request and garbage are
    dropped; a process with other settings, or another join token, ends at once with one line, and so does the
    second of two processes 1. None is counted: the rendezvous still waits, and SIGTERM ends it (143)."""
    first = run(0, 3)
    for stranger in (b"\x01", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", secrets.token_bytes(88)):
        with connect(first) as peer:
            peer.sendall(stranger)
    for options, env in ((("--lr", "0.5"), None), ((), {"NORMLAB_JOIN_TOKEN": "other"})):
        one_line_error(*ended(run(2, 3, options=options, env=env), 60), "settings or NORMLAB_JOIN_TOKEN differ")
    ones = [run(1, 3), run(1, 3, out=tmp_path / "another-1")]
    deadline = time.monotonic() + BOUND_S
    while all(one.poll() is None for one in ones):  # whichever comes second is refused
        assert time.monotonic() < deadline, "no process 1 was refused"
        time.sleep(0.01)
    second = next(one for one in ones if one.poll() is None)
    one_line_error(*ended(next(one for one in ones if one is not second)), "another process 1 has joined already")
    stops = []
    for process in (second, first):  # process 1 first: process 0 stopping would leave it unjoined (exit 2)
        process.send_signal(signal.SIGTERM)
        stops.append(ended(process, 60))
    for code, err in stops:
        assert code == 143 and err.splitlines()[-1].startswith("normlab: interrupted by SIGTERM; nothing was "
                                                               "written"), err
    assert len(stops[0][1].splitlines()) == 1, stops[0][1]
    warnings = stops[1][1].splitlines()[:-1]  # one line per connection process 0 ignored
    assert len(warnings) >= 3 and all(line.startswith("normlab: warning: process 0 of 3 ignored a connection")
                                      for line in warnings), warnings


def listeners(pid: int) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The TCP sockets process ``pid`` listens on, from the kernel's tables (/proc/net/tcp, tcp6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((ipaddress.ip_address(raw), int(port, 16)))
    return found


def loopback(address) -> bool:
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def test_joined_processes_listen_where_the_user_said_and_stop_on_sigterm(run):
    """Told 127.0.0.1, JAX's coordination service listens there, not on every interface; and SIGTERM after
    JAX has joined (whose preemption notifier took it over) stops each process at its next safe point: 143."""
    processes = [run(index, pause="data") for index in (0, 1)]
    for process in processes:
        reached(process, "data")  # joined: JAX's service runs, and its SIGTERM handler would be in place
    found = listeners(processes[0].pid) | listeners(processes[1].pid)
    assert any(port == processes[0].port for _, port in found), found  # the service is there ...
    assert all(loopback(address) for address, _ in found), found  # ... and nothing listens off loopback
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        code, err = ended(process, 60)
        assert code == 143, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("normlab: interrupted by SIGTERM; no epoch had finished"), err


def test_two_processes_given_one_out_both_stop_with_one_line(run, tmp_path):
    """The same folder, spelled two ways: refused at the rendezvous, in both, before either writes (else one
    stopped at the folder's lock and the other waited for it forever)."""
    processes = [run(0, out=tmp_path / "same"), run(1, out=tmp_path / "other" / ".." / "same")]
    for process in processes:
        one_line_error(*ended(process, 60), "processes 0 and 1 were given the same --out")
    assert not (tmp_path / "same").exists()


def test_a_killed_process_stops_the_other_with_one_line_and_the_resume_command(run, tmp_path):
    """Process 1 SIGKILLed after the first epoch: process 0, in the second epoch's collective with it, ends at
    once with one line (no traceback, no C++ abort a minute later) naming what it kept and how to resume."""
    survivor, victim = run(0), run(1, pause="checkpoint-write")
    reached(victim, "checkpoint-write")
    reached(survivor, "train", times=2)  # its epoch 1 is checkpointed; epoch 2 waits for process 1
    victim.kill()
    code, err = ended(survivor, 30)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("normlab: error: process 1 stopped; finished epochs are "
                                                         f"checkpointed in {tmp_path / 'out-0' / 'checkpoints'}"), err
    assert "Resume with: normlab train bn-after" in err and err.endswith("--resume"), err
    kept = [path.name for path in (tmp_path / "out-0" / "checkpoints").rglob("*.safetensors")]
    assert kept == ["epoch-0001.safetensors"]


def test_strangers_at_the_rendezvous_do_not_stop_the_run(run, tmp_path):
    """A client that says nothing, one with a forged CALL (greeting read, key guessed) and one sending garbage:
    none counts, and the two real processes train together, to the end, alike."""
    first = run(0, options=("--epochs", "1"))
    with connect(first) as silent, connect(first) as forger, connect(first) as garbage:
        greeting = forger.makefile("rb").read(20)  # magic, nonce
        forger.sendall(struct.pack("!4sI16s32s32s", greeting[:4], 1, secrets.token_bytes(16),
                                   secrets.token_bytes(32), secrets.token_bytes(32)))
        garbage.sendall(secrets.token_bytes(88))
        for peer in (forger, garbage):
            until_closed(peer)  # judged and dropped
        second = run(1, options=("--epochs", "1"))
        for process in (first, second):
            code, err = ended(process)
            assert code == 0, err
        assert until_closed(silent)[:4] == greeting[:4]  # greeted, then let go once the run began
    histories = [json.loads((tmp_path / f"out-{index}" / "results.json").read_text())["runs"][0]["history"]
                 for index in (0, 1)]
    assert histories[0] == histories[1] and len(histories[0]["loss"]) == 1


def test_a_process_far_slower_to_compile_still_trains_with_the_others(run, tmp_path):
    """Gloo sets up its context at the first collective and waits 30 s for the other processes: one that took 40 s
    longer to compile (a busy machine; here a fault delay after compiling) made process 0's first step fail with a
    traceback. Every process now waits for the others to have compiled (``processes.all_compiled``)."""
    first = run(0, options=("--epochs", "1"))
    second = run(1, options=("--epochs", "1"), env={"NORMLAB_FAULT_DELAY_AT": "compiled:40"})
    for process in (first, second):
        code, err = ended(process)
        assert code == 0, err
    histories = [json.loads((tmp_path / f"out-{index}" / "results.json").read_text())["runs"][0]["history"]
                 for index in (0, 1)]
    assert histories[0] == histories[1]
