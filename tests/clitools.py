"""The real CLI as tests meet it: run it, read its one-line errors, hold it at a stage, snapshot a folder, a
finished run to start from, a free port.

Test modules import what they use; ``session_cache`` imported into a module makes its CLI processes share the
session's compile cache (autouse).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


# Sets RLIMIT_AS, then becomes the CLI: no preexec_fn, which would fork this multithreaded (JAX) test process.
LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
           "os.execv(sys.executable, [sys.executable, '-m', 'normlab.cli', *sys.argv[2:]])")


def normlab(*args, cwd=None, env=None, limit_mb=None, timeout=600):
    """Run the CLI; ``limit_mb`` caps its address space (RLIMIT_AS), so unbounded memory use fails loudly."""
    head = ["-m", "normlab.cli"] if limit_mb is None else ["-c", LIMITED, str(limit_mb << 20)]
    run = subprocess.run([sys.executable, *head, *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)
    return run.returncode, run.stdout, run.stderr.strip()


def one_line_error(code, err, *fragments):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("normlab: error:") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def tree(folder: Path) -> dict[str, bytes]:
    """Every file's content, but for the lock file (which names the pid of the folder's latest holder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".normlab-lock"}


def start_paused(args, tmp_path, stage):
    """A CLI process held at ``stage`` until a signal comes (normlab.testpoints); returns once it is there."""
    stages = tmp_path / f"stages-{len(list(tmp_path.glob('stages-*')))}"
    proc = subprocess.Popen([sys.executable, "-m", "normlab.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NORMLAB_TEST_STAGES": str(stages), "NORMLAB_TEST_PAUSE_AT": stage})
    deadline = time.monotonic() + 600
    while not (stages.exists() and stage in stages.read_text().split()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


TINY = ["--subset", "500", "--epochs", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished ``train bn-after`` run, for the tests that start from one to copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = normlab("train", "bn-after", *TINY, "--out", out)
    assert code == 0, err
    return out


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def session_cache(cli_env):
    """The CLI processes here compile into, and load from, the session's compile cache (conftest.cli_env)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])
        yield
