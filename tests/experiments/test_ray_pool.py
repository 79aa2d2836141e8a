"""`normlab run --engine ray`: a sweep's jobs as Ray tasks on a local Ray instance, against the local pool.

The sweep mixes one- and two-device trials: a Ray worker must not carry one job's JAX (and its device count) into
the next job."""

import json
import subprocess
import sys

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
