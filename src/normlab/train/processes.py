"""A run over several processes (``--processes``, one per host or several on one): they join, then end together.

Joining. Before JAX starts, process 0 listens on ``--coordinator`` and every other process calls in: JAX's own join
(``jax.distributed.initialize``) aborts a process (SIGABRT) when another never comes, and lets in whoever connects.
The rendezvous is an exact protocol of fixed-length messages, each read whole within a deadline (``|`` joins):

    process 0 -> caller   HELLO  MAGIC | nonce0 (16 random bytes)
    caller -> process 0   CALL   MAGIC | index | nonce1 | folder | HMAC(key, "call" | nonce0 | nonce1 | index | folder)
    process 0 -> caller   REPLY  MAGIC | verdict | a | b | HMAC(key, "reply" | nonce0 | nonce1 | verdict | a | b)

``key`` is SHA-256 of what every process of the run is given alike (``run_key``): the command and its options, the
coordinator, the process count and ``NORMLAB_JOIN_TOKEN``. A client without it (a port scanner, a browser, a
process of another run or with other settings) cannot make the HMAC: it is dropped with one warning line, not
counted, and the rendezvous goes on; so is one that sends garbage, too few bytes, or nothing within HANDSHAKE_S.
The nonces make a recorded CALL or REPLY worthless on any other connection. ``folder`` is SHA-256 of the host and
``--out``'s real path (``folder_identity``), so two processes given the same --out on one host are refused, both,
before either writes.

What this does not protect: without NORMLAB_JOIN_TOKEN the key is as secret as the command line, so whoever can
reach the port and knows or guesses the command can take a process's place; a token of enough entropy, set in the
environment of every process (a command line is readable by every local user), closes that. Nothing is encrypted:
an attacker on the network path can read, cut or forge the streams. JAX's coordination service, which takes the
port over once all have joined, and gloo's connections authenticate nothing: the service is bound to --coordinator's
host (127.0.0.1 keeps a one-host run off the network); across hosts, run on a private network.

Ending. The rendezvous connections (process 0 to each other) stay open as the run's liveness channel. A process
that finishes sends DONE first; one that dies (killed, its own error) just closes them, so its peers learn it at
once, where JAX's collectives and heartbeats would end them a minute later with a C++ "Check failure". Process 0
passes a stop on to the others (STOPPED). A thread then ends the process whose peer stopped with ONE line: which
process stopped, what was kept and how to resume (``signals.note``), unless the main thread, whose collective
fails at the same moment, ends it first (within GRACE_S). Process 0 hosts JAX's coordination service, whose end
aborts the others' JAX at once: stopping, it tells them and waits for them to go first (``release``). Killed
(SIGKILL), it cannot: the others still say their line and leave at once, but JAX may print its own fatal error
first. A joined process that does not finish leaves with ``os._exit`` (``cli.main``, ``_leave_unfinished``): JAX's
exit handler would wait at a shutdown barrier for peers that are gone.
"""

import atexit
import hashlib
import hmac
import itertools
import json
import os
import secrets
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from normlab import signals
from normlab.errors import ConfigError, NormlabError, shown
from normlab.files import one_line
from normlab.net import host_port

MAGIC = b"NLJ\x01"  # normlab join, protocol version 1
HELLO = struct.Struct("!4s16s")
CALL = struct.Struct("!4sI16s32s32s")
REPLY = struct.Struct("!4sBII32s")
NOTICE = struct.Struct("!BI")  # on the liveness channel: DONE or STOPPED, and whose
GO, WRONG_KEY, TAKEN, SAME_OUT = range(4)  # verdicts of a REPLY
DONE, STOPPED = range(2)
HANDSHAKE_S = 10  # how long either side may take to send its part of the handshake
RETRY_S = 0.2  # how often a caller tries again while process 0 is not listening yet
GRACE_S = 2  # how long a peer's stop waits for the main thread to end the process by itself
RELEASE_S = GRACE_S + 3  # how long process 0, stopping, waits for the others to go first

_together: "_Together | None" = None  # this process's liveness channel once it has joined
_barriers = itertools.count()  # every process passes the same barriers in the same order


def joined() -> bool:
    """Whether this process is one of several (``Processes.join``)."""
    return _together is not None


def all_compiled() -> None:
    """A joined process waits here, after compiling and before its first collective, until every other one has
    compiled too (as long as ``--join-timeout``). Gloo sets up its context at the first collective and gives the
    others 30 s: on a busy machine one process compiled for longer, and the first step of the others failed."""
    if _together is None:
        return
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(f"normlab-compiled-{next(_barriers)}",
                                                    timeout_in_ms=1000 * _together.timeout_s)


class PeerStopped(NormlabError):
    """Another process of the run stopped before the run was done."""


class TogetherFailed(NormlabError):
    """Training across the processes failed in JAX (a collective or the coordination service timed out)."""


@dataclass(frozen=True)
class Processes:
    """A run over several processes (hosts), each contributing its devices to one mesh: ``jax.distributed``."""
    coordinator: str  # host:port of process 0, which the others connect to
    count: int
    index: int
    timeout_s: int = 300  # how long a process waits for the others to join

    def __post_init__(self):
        if not 2 <= self.count <= 1024:
            raise ConfigError(f"--processes must be in 2..1024, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"--process-id must be in 0..{self.count - 1}, got {self.index}")
        if host_port(self.coordinator) is None:
            raise ConfigError(f"--coordinator must be HOST:PORT, the port 1..65535 in ASCII digits, got "
                              f"{shown(self.coordinator)}")
        if not 1 <= self.timeout_s <= 86400:
            raise ConfigError(f"--join-timeout must be in 1..86400 seconds, got {self.timeout_s}")

    @property
    def address(self) -> tuple[str, int]:
        return host_port(self.coordinator)

    def join(self, devices: int, settings: dict, out: Path) -> None:
        """Before JAX starts: meet the others (``settings``: what every process is given alike, ``run_key``; ``out``
        this process's run folder); on a CPU each process gets ``devices / count`` virtual devices, their
        collectives over gloo (GPUs use NCCL)."""
        global _together
        if devices % self.count:
            raise ConfigError(f"--devices {devices} must be a multiple of --processes {self.count}: each process "
                              f"contributes as many devices")
        peers = self._rendezvous(run_key(settings, self), folder_identity(out))
        _together = _Together(self.index, peers, self.timeout_s)  # from now on a peer's stop ends this process
        import jax
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", devices // self.count)
        atexit.register(_leave_unfinished)  # after JAX's own exit handler, so it runs before it
        try:  # bound where the user said: JAX's default is every interface
            jax.distributed.initialize(self.coordinator, self.count, self.index,
                                       initialization_timeout=self.timeout_s, coordinator_bind_address=self.coordinator)
        except Exception as error:  # noqa: BLE001 - XLA's errors (a port taken meanwhile): one line
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise _together.end(ConfigError(f"{self.who()}: JAX could not start on {one_line(self.coordinator)}: "
                                            f"{one_line(first)}")) from None
        # JAX's preemption notifier has taken SIGTERM over (a C++ handler that swallowed it: the run went on to
        # the end, exit 0); normlab's handlers again, which stop at the next safe point.
        signals.install()

    def _rendezvous(self, key: bytes, folder: bytes) -> dict[int, socket.socket]:
        """Every process present, each id once, or a one-line error: the open connections to the peers."""
        deadline = time.monotonic() + self.timeout_s
        try:
            with signals.interruptible():  # a Ctrl-C while waiting for the others stops it at once
                if self.index == 0:
                    return _Gathering(self, key, folder).run(deadline)
                return {0: self._call_in(key, folder, deadline)}
        except TimeoutError as error:
            missing = f" ({error.args[0]})" if error.args else ""
            raise ConfigError(f"{self.who()} could not join {one_line(self.coordinator)}: not every process "
                              f"came within --join-timeout ({self.timeout_s} s){missing}") from None
        except (OSError, EOFError, ValueError) as error:  # ValueError: a host that is no address (a NUL, bad IDNA)
            raise ConfigError(f"{self.who()} could not join {one_line(self.coordinator)}: "
                              f"{one_line(str(error) or type(error).__name__)}") from None

    def who(self) -> str:
        return f"process {self.index} of {self.count}"

    def _call_in(self, key: bytes, folder: bytes, deadline: float) -> socket.socket:
        """As process N > 0: call process 0 until it listens, prove the key, wait for its verdict."""
        peer, nonce0 = self._greeted(deadline)
        try:
            nonce1 = secrets.token_bytes(16)
            fields = (self.index.to_bytes(4, "big"), folder)
            peer.sendall(CALL.pack(MAGIC, self.index, nonce1, folder, _mac(key, b"call", nonce0, nonce1, *fields)))
            try:
                magic, verdict, a, b, mac = REPLY.unpack(_exactly(peer, REPLY.size, deadline))
            except EOFError:
                raise ConfigError(f"{self.who()} could not join {one_line(self.coordinator)}: process 0 closed the "
                                  f"connection before every process had joined (it stopped?)") from None
            if magic == MAGIC and verdict == GO and hmac.compare_digest(
                    mac, _verdict_mac(key, nonce0, nonce1, verdict, a, b)):
                return peer
        except BaseException:
            peer.close()
            raise
        peer.close()
        raise ConfigError(f"{self.who()} could not join {one_line(self.coordinator)}: " + {
            GO: "what answers there does not hold this run's key: it is not this run's process 0",
            WRONG_KEY: "process 0 refused this process: its settings or NORMLAB_JOIN_TOKEN differ from process "
                       "0's (run the same command everywhere, but for --process-id and --out)",
            TAKEN: f"another process {a} has joined already; give each process its own --process-id",
            SAME_OUT: _same_out(a, b),
        }.get(verdict if magic == MAGIC else -1, "process 0 broke the join protocol"))

    def _greeted(self, deadline: float) -> tuple[socket.socket, bytes]:
        """A connection to process 0, once it listens, and the nonce of its greeting."""
        where = one_line(self.coordinator)
        while True:
            try:
                peer = socket.create_connection(self.address, timeout=min(HANDSHAKE_S, _remaining(deadline)))
            except (ConnectionRefusedError, TimeoutError):  # process 0 is not listening yet
                time.sleep(min(RETRY_S, _remaining(deadline)))
                continue
            try:
                magic, nonce0 = HELLO.unpack(_exactly(peer, HELLO.size, min(deadline, time.monotonic() + HANDSHAKE_S)))
            except (EOFError, ConnectionError):  # process 0 closed its rendezvous as this one came: see who listens
                peer.close()
                time.sleep(min(RETRY_S, _remaining(deadline)))
                continue
            except BaseException as error:
                peer.close()
                if not isinstance(error, TimeoutError):
                    raise
                _remaining(deadline)  # the join's own deadline passed: that is the error
                raise ConfigError(f"{self.who()}: {where} accepts connections but sends no normlab greeting within "
                                  f"{HANDSHAKE_S} s (another program on that port, or a run that has started "
                                  f"already)") from None
            if magic == MAGIC:
                return peer, nonce0
            peer.close()
            raise ConfigError(f"{self.who()}: what answers at {where} is not a normlab process 0 (another program "
                              f"on that port, or a run that has started already)")


def _same_out(a: int, b: int) -> str:
    return f"processes {a} and {b} were given the same --out on one host; give each process its own --out"


class _Gathering:
    """Process 0's side of the join: many connections at once, each read as it comes (``selectors``), so a
    client that sends nothing holds up no one."""

    def __init__(self, processes: Processes, key: bytes, folder: bytes):
        self.processes, self.key, self.folder = processes, key, folder
        self.callers: dict[socket.socket, _Caller] = {}
        self.admitted: dict[int, _Caller] = {}

    def run(self, deadline: float) -> dict[int, socket.socket]:
        count = self.processes.count
        try:
            with _listener(*self.processes.address) as server, selectors.DefaultSelector() as self.selector:
                server.setblocking(False)  # a caller gone between select and accept must not block the accept
                self.selector.register(server, selectors.EVENT_READ)
                while len(self.admitted) < count - 1:
                    waiting = [c.deadline for c in self.callers.values() if c.index is None]
                    ready = self.selector.select(max(0.0, min([deadline, *waiting]) - time.monotonic()))
                    for selected, _ in ready:
                        if selected.fileobj is server:
                            self._greet(server)
                        else:
                            self._hear(self.callers[selected.fileobj])
                    for caller in [c for c in self.callers.values() if c.index is None]:
                        if time.monotonic() > caller.deadline:
                            self._drop(caller, f"{len(caller.received)} of {CALL.size} bytes in {HANDSHAKE_S} s")
                    if len(self.admitted) < count - 1 and time.monotonic() > deadline:
                        absent = sorted(set(range(1, count)) - set(self.admitted))
                        raise TimeoutError(f"process(es) {', '.join(map(str, absent))} did not call in")
        except BaseException:
            for caller in self.callers.values():
                caller.conn.close()
            raise
        for caller in self.callers.values():
            if caller.index is None:  # still saying who it is: the run has everyone it needs
                caller.conn.close()
            else:
                caller.reply(self.key, GO)
        return {index: caller.conn for index, caller in self.admitted.items()}

    def _greet(self, server: socket.socket) -> None:
        try:
            conn, address = server.accept()
        except OSError:  # gone between select and accept
            return
        caller = _Caller(conn, address)
        try:
            conn.settimeout(HANDSHAKE_S)
            conn.sendall(HELLO.pack(MAGIC, caller.nonce0))
        except OSError:
            conn.close()
            return
        self.callers[conn] = caller
        self.selector.register(conn, selectors.EVENT_READ)

    def _hear(self, caller: "_Caller") -> None:
        try:
            data = caller.conn.recv(CALL.size - len(caller.received) if caller.index is None else 1)
        except OSError:
            data = b""
        if caller.index is not None:  # an admitted process says nothing until GO: it left (or broke the protocol)
            del self.admitted[caller.index]
            self._drop(caller, f"process {caller.index} left before the run started")
            return
        if not data:
            self._drop(caller, f"closed after {len(caller.received)} of {CALL.size} bytes")
            return
        caller.received += data
        if len(caller.received) == CALL.size:
            self._judge(caller)

    def _judge(self, caller: "_Caller") -> None:
        magic, index, caller.nonce1, folder, mac = CALL.unpack(caller.received)
        if magic != MAGIC:
            return self._drop(caller, "not normlab's join protocol")
        if not hmac.compare_digest(mac, _mac(self.key, b"call", caller.nonce0, caller.nonce1,
                                             index.to_bytes(4, "big"), folder)):
            caller.reply(self.key, WRONG_KEY)
            return self._drop(caller, "a wrong key: its settings or NORMLAB_JOIN_TOKEN differ from this process's")
        if not 0 < index < self.processes.count:  # the count is in the key: only a broken client gets here
            return self._drop(caller, f"process number {index} out of range")
        if index in self.admitted:
            caller.reply(self.key, TAKEN, index)
            return self._drop(caller, f"a second process {index}")
        same = [other for other, c in self.admitted.items() if c.folder == folder]
        if folder == self.folder or same:
            first = same[0] if same else 0
            for other in (caller, *self.admitted.values()):
                other.reply(self.key, SAME_OUT, first, index)
            raise ConfigError(f"{self.processes.who()}: {_same_out(first, index)}")
        caller.index, caller.folder = index, folder
        self.admitted[index] = caller

    def _drop(self, caller: "_Caller", why: str) -> None:
        """One warning line, and the connection closed: it is not counted and the rendezvous goes on."""
        host, port = caller.address[:2]
        print(f"normlab: warning: {self.processes.who()} ignored a connection to its rendezvous from "
              f"{one_line(host)}:{port}: {why}", file=sys.stderr, flush=True)
        self.selector.unregister(caller.conn)
        del self.callers[caller.conn]
        caller.conn.close()


class _Caller:
    """A connection to process 0's rendezvous: its CALL as it arrives, then, once admitted, whose it is."""

    def __init__(self, conn: socket.socket, address):
        self.conn, self.address = conn, address
        self.deadline = time.monotonic() + HANDSHAKE_S
        self.nonce0, self.nonce1 = secrets.token_bytes(16), b""
        self.received = b""
        self.index: int | None = None
        self.folder = b""

    def reply(self, key: bytes, verdict: int, a: int = 0, b: int = 0) -> None:
        mac = _verdict_mac(key, self.nonce0, self.nonce1, verdict, a, b)
        try:
            self.conn.sendall(REPLY.pack(MAGIC, verdict, a, b, mac))
        except OSError:  # it left: its own problem, told by its own process
            pass


class _Together:
    """The liveness channel of a joined process: a daemon thread that ends it when a peer stops (see the module)."""

    def __init__(self, index: int, peers: dict[int, socket.socket], timeout_s: int):
        self.index, self.peers, self.timeout_s = index, peers, timeout_s
        self.finished = False  # this process's command completed: a peer's stop no longer matters
        self.done: set[int] = set()  # peers that said DONE
        self.lost = threading.Event()
        self.stopped = -1  # the process whose stop ended the run
        self.ending = threading.Event()  # the main thread is ending the process
        self.claim = threading.Lock()  # the one who says the last line: the main thread or the watcher
        for peer in peers.values():
            _keep_alive(peer)
        threading.Thread(target=self._watch, name="normlab-peers", daemon=True).start()

    def _watch(self) -> None:
        with selectors.DefaultSelector() as selector:
            for index, peer in self.peers.items():
                selector.register(peer, selectors.EVENT_READ, index)
            while selector.get_map():
                for selected, _ in selector.select():
                    index = selected.data
                    try:
                        kind, whose = NOTICE.unpack(_exactly(selected.fileobj, NOTICE.size,
                                                             time.monotonic() + HANDSHAKE_S))
                    except (OSError, EOFError):  # closed (or broke): done, or it stopped
                        selector.unregister(selected.fileobj)
                        if index not in self.done:
                            self._peer_stopped(index, told=False)
                        continue
                    if kind == DONE and whose == index:
                        self.done.add(index)
                    else:  # STOPPED (process 0 passing it on), or garbage: the run is over either way
                        self._peer_stopped(whose if kind == STOPPED and whose != self.index else index, told=True)

    def _peer_stopped(self, index: int, told: bool) -> None:
        if self.lost.is_set():  # the first stop is the one to name (process 0 passes it on, then closes)
            return
        self.stopped = index
        self.lost.set()
        if self.index == 0:  # pass it on: every process then names the one that stopped
            self._tell(STOPPED, index, but=index)
        if self.finished:  # this process has all its results: leave now, JAX's exit would wait for the peer
            self.leave(0)
        # Process 0 gone unannounced (killed) took JAX's coordination service along: JAX aborts this process any
        # moment, so there is no time to give the main thread.
        grace = 0 if index == 0 and not told else GRACE_S
        if self.ending.wait(grace) or not self.claim.acquire(blocking=False):
            return  # the main thread ends the process (a collective with the peer failed there too)
        own = signals.interruption(None)
        line = f"interrupted by {own}; {signals.note()}" if own else f"error: {self.peer_stopped()}"
        print(f"normlab: {one_line(line)}", file=sys.stderr, flush=True)
        self.leave(own.exit_code if own else 2)

    def peer_stopped(self) -> str:
        return f"process {self.stopped} stopped; {signals.note()}"

    def _tell(self, kind: int, index: int, but: int = -1) -> None:
        for other, peer in self.peers.items():
            if other != but:
                try:
                    peer.sendall(NOTICE.pack(kind, index))
                except OSError:  # that one is gone too: its own EOF says so
                    pass

    def finish(self) -> None:
        """The command completed: the peers are told, so this process's exit is no stop to them."""
        self.finished = True
        self._tell(DONE, self.index)

    def end(self, error: BaseException) -> BaseException:
        """The command failed with ``error``: what to raise. A collective that failed because a peer died becomes
        one line naming it; once the watcher has said its line, this thread only waits for it to end the process."""
        if not self.claim.acquire(blocking=False):
            threading.Event().wait()
        self.ending.set()
        if signals.interruption(error) is None and not isinstance(error, NormlabError):
            if self.lost.wait(GRACE_S):
                error = PeerStopped(self.peer_stopped())
            elif type(error).__name__ == "JaxRuntimeError":  # not a bug of ours: XLA's collectives across hosts
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                error = TogetherFailed(f"process {self.index}: training across the processes failed in JAX "
                                       f"({one_line(first)[:200]}); {signals.note()}")
        self.release()
        return error

    def release(self) -> None:
        """Process 0 hosts JAX's coordination service, whose end aborts the others' JAX at once (a C++ "Check
        failure"): before it goes, it tells them and waits (RELEASE_S at most) until they are gone."""
        if self.index != 0:
            return
        self._tell(STOPPED, 0)
        deadline = time.monotonic() + RELEASE_S
        for peer in self.peers.values():
            try:
                while _exactly(peer, 1, deadline):  # a DONE's bytes, until the peer closes
                    pass
            except (OSError, EOFError):  # gone (EOF), or out of time
                pass

    def leave(self, code: int) -> None:
        self.release()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def watched(command):
    """``command`` as a joined process runs it: its end is told to the peers (see ``_Together``)."""

    def run(*args):
        try:
            result = command(*args)
        except BaseException as error:
            raise _together.end(error) from None
        _together.finish()
        return result

    return run


def _leave_unfinished() -> None:
    """At exit, a joined process whose command did not finish (a traceback: exit code 1) leaves at once: JAX's
    exit handler would wait at its shutdown barrier for peers that have stopped or wait for this one."""
    if _together is not None and not _together.finished:
        _together.leave(1)


def run_key(settings: dict, processes: Processes) -> bytes:
    """The run's shared secret (see the module): every process derives it alike from its own settings."""
    text = json.dumps({"settings": settings, "coordinator": processes.coordinator, "processes": processes.count,
                       "token": os.environ.get("NORMLAB_JOIN_TOKEN", "")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def folder_identity(out: Path) -> bytes:
    """``out`` as this host sees it: equal for two processes of one host given one folder by any spelling (a
    relative path, a link). The kernel's boot id tells apart two machines that share a host name."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_bytes().strip()
    except OSError:
        boot = b""
    parts = (socket.gethostname().encode("utf-8", "surrogateescape"), boot, os.fsencode(os.path.realpath(out)))
    return hashlib.sha256(b"\0".join(parts)).digest()


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def _verdict_mac(key: bytes, nonce0: bytes, nonce1: bytes, verdict: int, a: int, b: int) -> bytes:
    return _mac(key, b"reply", nonce0, nonce1, struct.pack("!BII", verdict, a, b))


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _exactly(peer: socket.socket, size: int, deadline: float) -> bytes:
    """``size`` bytes from ``peer`` before ``deadline`` (TimeoutError), or EOFError if it closes first: a ``recv``
    returns what has arrived, which may be less."""
    data = b""
    while len(data) < size:
        peer.settimeout(_remaining(deadline))
        chunk = peer.recv(size - len(data))
        if not chunk:
            raise EOFError(f"the connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _listener(host: str, port: int) -> socket.socket:
    """Listening on ``host`` (an IPv4 or IPv6 address or a name) only, as JAX's service will."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=64)


def _keep_alive(peer: socket.socket) -> None:
    """A host that vanishes without closing its connections (power, network) is seen in ~10 s, not hours."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 4), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            peer.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
