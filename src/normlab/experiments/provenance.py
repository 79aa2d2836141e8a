"""Where a result came from: code version, library versions, machine and time — stored with every result."""

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import jax

from normlab.engine import applied
from normlab.engine.machine import cpu_name


def git_commit() -> str:
    """The checkout's HEAD, with ``-dirty`` when the tree has uncommitted changes; ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                           timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in ("normlab", "jax", "jaxlib", "optax", "numpy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def provenance(argv: list[str] | None = None) -> dict:
    device = jax.devices()[0]
    return {
        "git_commit": git_commit(),
        "versions": versions(),
        "device": f"{device.platform}:{device.device_kind} ({cpu_name()}, {jax.local_device_count()} device(s))",
        "host": platform.node(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv if argv is not None else sys.argv),
        "engine": applied.describe(),
    }
