"""Measure which engine settings train fastest on this machine, and remember the winner.

The candidates are XLA's GEMM under every XLA flag set (``settings.FLAG_SETS``, which differ in how XLA compiles
its dots), and every BLAS GEMM that loads here (MKL, OpenBLAS: a custom call, which those flags leave alone) under
the first set. Flags act when XLA starts, so each flag set runs in a child process, which times its GEMMs in turn:
one epoch of the preset's real program (batch 32, ``STEPS`` steps, synthetic images of the real shape) per GEMM
per round, interleaved, the fastest round counting — noise on a shared machine only slows a run down. It is done
for every core count a process of ours runs with: all the usable cores (``train``) and one (the study's pinned
workers). The result is kept per CPU model, instruction set, jaxlib version and core count in
``~/.cache/normlab/engine/tuned.json``.
"""

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from normlab.errors import NormlabError, shown

STEPS, ROUNDS, PRESET = 300, 3, "bn-after"
MAX_STEPS = 20_000  # a timed epoch of synthetic images held in memory: 20,000 x 32 images is 500 MB
MAX_BYTES = 1 << 20  # tuned.json: under 1 kB per machine key


class TuneError(NormlabError):
    """A candidate could not be measured: ``normlab tune`` fails with it; a first use runs the defaults instead."""


def machine_key(cores: int) -> str:
    from importlib.metadata import version  # not jaxlib itself: light commands must not load it
    from normlab.engine.machine import cpu_name, instruction_sets
    isa = " ".join(instruction_sets()) or "baseline ISA"
    return f"{cpu_name()} | {isa} | jaxlib {version('jaxlib')} | {cores} core(s)"


def cache_file() -> Path:
    from normlab.files import cache_root
    return cache_root() / "engine" / "tuned.json"


def _read() -> dict:
    """Every machine's tuned choice; a missing or damaged file (not a regular file, too big, not JSON: anything
    ``files.read_json`` refuses) counts as untuned: the default engine runs, and a tuning run rewrites it."""
    from normlab.files import FileProblem, read_json
    try:
        entries = read_json(cache_file(), MAX_BYTES)
    except FileProblem:
        return {}
    return entries if isinstance(entries, dict) else {}


def cached(cores: int | None = None) -> dict | None:
    """The tuned choice for this machine with ``cores`` usable cores (default: this process's), if measured."""
    from normlab.engine import settings
    entry = _read().get(machine_key(cores or settings.cores()))
    ok = (isinstance(entry, dict) and entry.get("gemm") in settings.GEMMS and isinstance(entry.get("flags"), str)
          and entry["flags"] in settings.FLAG_SETS and isinstance(entry.get("timestamp"), str)
          and isinstance(entry.get("step_ms"), dict))  # what `normlab tune --show` prints
    return entry if ok else None


@contextlib.contextmanager
def _locked():
    """One tuning per machine at a time: two at once would time each other."""
    path = cache_file().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)  # a planted link: ELOOP
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def core_counts() -> list[int]:
    """The core counts our processes run with: all usable cores (``train``) and one (a study's pinned worker)."""
    from normlab.engine import settings
    return sorted({1, settings.cores()})


def tune(say=print, steps: int = STEPS, rounds: int = ROUNDS, preset: str = PRESET,
         cores: int | None = None) -> dict[int, dict]:
    """Measure every candidate for each core count (only ``cores`` if given), save and return ``{cores: entry}``."""
    if not (1 <= steps <= MAX_STEPS and rounds >= 1):
        raise TuneError(f"steps must be 1..{MAX_STEPS:,} and rounds at least 1, got {steps} and {rounds}")
    from normlab.engine import settings
    from normlab.files import write_text
    if cores is not None and not 1 <= cores <= settings.cores():
        raise TuneError(f"cores must be 1..{settings.cores()} (the cores this process may use), got {cores}")
    counts = core_counts() if cores is None else [cores]
    with _locked():
        say(f"normlab: tuning the engine for this machine ({preset}; XLA's GEMM under {len(settings.FLAG_SETS)} flag "
            f"sets, and MKL and OpenBLAS; {' and '.join(map(str, counts))} core(s); about a minute, once; "
            f"`normlab tune` redoes it, {settings.OVERRIDE}=gemm=G,flags=F overrides)")
        entries, chosen = _read(), {}
        for cores in counts:
            measured = {}
            for flags in settings.FLAG_SETS:
                gemms = settings.GEMMS if flags == next(iter(settings.FLAG_SETS)) else ("xla",)
                for gemm, seconds in _measure_in_child(cores, flags, gemms, steps, rounds, preset).items():
                    measured[f"{flags}/{gemm}"] = seconds
            if not measured:
                raise TuneError("no engine setting could be measured")
            best = min(measured, key=measured.get)
            flags, gemm = best.split("/")
            chosen[cores] = entries[machine_key(cores)] = {
                "gemm": gemm, "flags": flags, "step_ms": {k: round(1e3 * v, 4) for k, v in measured.items()},
                "preset": preset, "steps": steps, "rounds": rounds,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            say(f"normlab: {cores} core(s): {gemm} GEMM, {flags} flags, "
                f"{1e3 * measured[best]:.3f} ms/step ({_versus(measured, best)})")
        try:
            write_text(cache_file(), json.dumps(entries, indent=1))
        except OSError as error:  # a read-only or full cache: this process still runs the winner
            say(f"normlab: the tuned choice was not saved ({cache_file()}: {error.strerror or error})")
    return chosen


def _versus(measured: dict, best: str) -> str:
    default = "no-library-fusion/xla"
    return f"{measured[default] / measured[best]:.2f}x the default's speed" if default in measured else "default n/a"


def _measure_in_child(cores: int, flags: str, gemms, steps: int, rounds: int, preset: str) -> dict[str, float]:
    """The child's seconds per step for each GEMM, from the file it writes: its stdout is no channel, native code
    prints there too (``XLA_FLAGS=--xla_dump_to=-`` dumps HLO, ``MKL_VERBOSE=1`` logs every call), last at exit."""
    from normlab.files import FileProblem, MiB, read_text
    with tempfile.TemporaryDirectory(prefix="normlab-tune-") as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, "-m", "normlab.engine.measure", "--cores", str(cores), "--flags", flags,
                   "--gemms", ",".join(gemms), "--steps", str(steps), "--rounds", str(rounds), "--preset", preset,
                   "--result", str(result)]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace")
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TuneError(f"measuring {flags} on {cores} core(s) failed: {tail}")
        try:
            measured = json.loads(read_text(result, MiB))
        except (FileProblem, ValueError) as error:
            raise TuneError(f"measuring {flags} on {cores} core(s) gave no result ({error})") from None
    if not (isinstance(measured, dict) and all(isinstance(v, float) for v in measured.values())):
        raise TuneError(f"measuring {flags} on {cores} core(s) gave no result ({shown(measured)})")
    return measured
