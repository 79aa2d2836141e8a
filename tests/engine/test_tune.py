"""`normlab tune`: every candidate measured for each core count, the winner kept per machine and used."""

import json
import os
import subprocess
import sys

import pytest

from conftest import cache_home
from normlab import runtime
from normlab.engine import tune
from normlab.engine.blas import installed


def normlab(*args, env):
    return subprocess.run([sys.executable, "-m", "normlab.cli", *args], env=env, capture_output=True, text=True)


@pytest.fixture
def untuned(tmp_path, cli_env):
    """A `normlab` environment with an empty cache and no NORMLAB_ENGINE: the machine as first met."""
    env = {**cli_env, "XDG_CACHE_HOME": str(cache_home(tmp_path / "cache"))}
    env.pop("NORMLAB_ENGINE")
    return env


def test_tune_measures_every_candidate_and_runs_the_winner(untuned, tmp_path):
    """For all cores only (``--cores``): each core count's measurement is the same code, and a first use's
    tuning of both counts is ``tune.core_counts``'."""
    done = normlab("tune", "--steps", "20", "--rounds", "1", "--cores", str(runtime.cores()), env=untuned)
    assert done.returncode == 0, done.stderr
    entries = json.loads((tmp_path / "cache" / "normlab" / "engine" / "tuned.json").read_text())
    assert list(entries) == [tune.machine_key(runtime.cores())]
    assert tune.core_counts() == sorted({1, runtime.cores()})
    for key, entry in entries.items():
        assert "jaxlib" in key and "core(s)" in key
        xla = {f"{flags}/xla" for flags in runtime.FLAG_SETS}
        blas = {f"no-library-fusion/{name}" for name in installed()}
        assert set(entry["step_ms"]) == xla | blas
        best = min(entry["step_ms"], key=entry["step_ms"].get)
        assert best == f"{entry['flags']}/{entry['gemm']}"
        assert all(0 < ms < 1e4 for ms in entry["step_ms"].values())
    mine = entries[next(k for k in entries if k.endswith(f"| {runtime.cores()} core(s)"))]
    shown = normlab("tune", "--show", env=untuned)
    assert f"in use here: gemm={mine['gemm']},flags={mine['flags']} (tuned)" in shown.stdout

    run = tmp_path / "run"
    assert normlab("train", "bn-after", "--subset", "300", "--epochs", "1", "--out", str(run), env=untuned).returncode == 0
    engine = json.loads((run / "results.json").read_text())["provenance"]["engine"]
    assert (engine["gemm"], engine["flags"], engine["source"]) == (mine["gemm"], mine["flags"], "tuned")
    assert all(f"--{name}={value}" in engine["xla_flags"] for name, value in runtime.FLAG_SETS[mine["flags"]].items())

    overridden = {**untuned, "NORMLAB_ENGINE": "gemm=xla,flags=library-dots"}
    assert "in use here: gemm=xla,flags=library-dots (NORMLAB_ENGINE)" in normlab("tune", "--show",
                                                                                   env=overridden).stdout


def test_what_native_code_prints_in_a_measuring_child_is_no_result(untuned, tmp_path):
    """XLA dumps every program's HLO to fd 1 (``--xla_dump_to=-``), and a library may print last, at exit (here a
    ``sitecustomize`` in every process): the children's measurements still arrive."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('import atexit, os\natexit.register(os.write, 1, b"native noise\\n")\n')
    noisy = {**untuned, "PYTHONPATH": os.pathsep.join([str(site), untuned.get("PYTHONPATH", "")]),
             "XLA_FLAGS": "--xla_dump_to=-"}
    done = subprocess.run([sys.executable, "-m", "normlab.cli", "tune", "--steps", "2", "--rounds", "1", "--cores",
                           "1"], env=noisy, cwd=tmp_path, capture_output=True, text=True)  # XLA also writes into ./-/
    assert done.returncode == 0 and done.stdout.endswith("native noise\n"), done.stderr  # in every process
    entry = json.loads((tmp_path / "cache" / "normlab" / "engine" / "tuned.json").read_text())[tune.machine_key(1)]
    assert set(entry["step_ms"]) >= {f"{flags}/xla" for flags in runtime.FLAG_SETS}
    assert all(0 < ms < 1e4 for ms in entry["step_ms"].values())


# This machine's entry, damaged: what `normlab tune --show` and every command's engine read of it.
ENTRIES = {"a GEMM that does not exist": {"gemm": "cuda", "flags": "no-library-fusion"},
           "flags a list": {"gemm": "xla", "flags": [], "timestamp": "t", "step_ms": {}},
           "no timestamp": {"gemm": "xla", "flags": "no-library-fusion", "step_ms": {}}}


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", json.dumps({"x": 1}), "[" * 100_000 + "]" * 100_000,
                                     *ENTRIES])
def test_a_damaged_tuning_file_counts_as_untuned(tmp_path, monkeypatch, content):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NORMLAB_ENGINE")
    if content in ENTRIES:
        content = json.dumps({tune.machine_key(runtime.cores()): ENTRIES[content]})
    tune.cache_file().parent.mkdir(parents=True)
    tune.cache_file().write_text(content)
    assert tune.cached() is None
    assert runtime.chosen() == runtime.Engine()


@pytest.mark.parametrize("option,value,says", [("--steps", "0", "steps must be 1..20,000 and rounds at least 1"),
                                               ("--steps", "10000000000", "steps must be 1..20,000"),
                                               ("--rounds", "-1", "rounds at least 1"),
                                               ("--cores", "0", "cores must be 1.."), ("--cores", "4096", "got 4096")])
def test_tune_refuses_nonsense(untuned, option, value, says):
    done = normlab("tune", option, value, env=untuned)
    assert done.returncode == 2
    assert done.stderr.startswith("normlab: error: ") and says in done.stderr
    assert done.stderr.count("\n") == 1
