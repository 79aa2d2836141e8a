"""Study files: typed parsing with clear errors, grid and random expansion, and resumable sweeps."""

import json
import os
import subprocess
import sys
import time

import pytest

from normlab.errors import ConfigError
from normlab.experiments import study as studies
from normlab.experiments.sweep import trials

GOOD = """
name = "t"
[config]
presets = ["bn-after"]
seeds = 2
learning_rate = 1
[sweep]
batch_size = [16, 32]
bn_momentum = [0.9, 0.99]
"""


def test_builtin_studies_parse_and_seed_is_the_original_study():
    assert {"seed", "lr-sweep", "batch-size", "momentum"} <= set(studies.builtin_studies())
    seed = studies.load("seed").base
    assert (seed.presets, seed.seeds, seed.epochs, seed.learning_rate, seed.batch_size, seed.bn_momentum,
            seed.bn_epsilon, seed.optimizer) == (("baseline", "bn-after", "bn-before"), 5, 10, 1e-3, 32, 0.99, 1e-3,
                                                 "sgd")
    lrs = [o["learning_rate"] for _, o in trials(studies.load("lr-sweep"))]
    assert lrs == [0.001, 0.01, 0.1, 1.0] and studies.load("lr-sweep").base.seeds >= 3


def test_grid_is_the_cartesian_product_with_typed_values():
    study = studies.parse(GOOD, "t.toml")
    assert study.base.learning_rate == 1.0 and isinstance(study.base.learning_rate, float)
    assert [o for _, o in trials(study)] == [{"batch_size": b, "bn_momentum": m} for b in (16, 32) for m in (0.9, 0.99)]
    assert trials(study)[3][0] == "003-batch_size=32-bn_momentum=0.99"


def test_random_samples_are_seeded_and_in_range():
    text = GOOD + '[sweep.random]\nsamples = 5\nseed = 3\nlearning_rate = { log_uniform = [1e-4, 1.0] }\n'
    a, b = (trials(studies.parse(text, "t.toml")) for _ in range(2))
    assert a == b and len(a) == 4 + 5
    assert all(1e-4 <= o["learning_rate"] <= 1.0 for _, o in a[4:])


@pytest.mark.parametrize("text,fragment", [
    ('[config]\nlearning_rat = 0.1', "unknown config key 'learning_rat'; did you mean 'learning_rate'?"),
    ('[confg]\nseeds = 1', "unknown section 'confg'; did you mean 'config'?"),
    ('[config]\nseeds = "three"', "seeds must be int, got 'three'"),
    ('[config]\nepochs = 2.5', "epochs must be int"),
    ('[config]\nlearning_rate = 0', "learning_rate must be > 0, got 0.0"),
    ('[config]\nbn_momentum = 1.5', "bn_momentum must be in [0, 1)"),
    ('[config]\nbatch_size = 0', "batch_size must be at least 1"),
    ('[config]\nbn_epsilon = -1', "bn_epsilon must be > 0"),
    ('[config]\npresets = ["bn-sideways"]', "unknown preset 'bn-sideways'"),
    ('[config]\noptimizer = "lbfgs"', "optimizer must be one of sgd, momentum, adam"),
    ('[sweep]\nlearning_rate = [0.1, -1]', "learning_rate must be > 0, got -1.0"),
    ('[sweep]\nlearning_rate = 0.1', "sweep.learning_rate must be a non-empty list"),
    ('[sweep.random]\nsamples = 2\nlearning_rate = { normal = [0, 1] }', "sweep.random.learning_rate must be"),
    ('[config\nseeds = 1', "not valid TOML"),
])
def test_config_errors_are_one_clear_line(text, fragment):
    with pytest.raises(ConfigError) as caught:
        studies.parse(text, "bad.toml")
    message = str(caught.value)
    assert fragment in message and message.startswith("bad.toml") and "\n" not in message


@pytest.mark.full_data
def test_killed_sweep_reruns_only_the_missing_trials(tmp_path, real_data):
    study = tmp_path / "sweep.toml"
    study.write_text('name = "resume"\n[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 1\nsubset = 300\n'
                     '[sweep]\nlearning_rate = [0.001, 0.01, 0.1, 1.0]\n')
    out = tmp_path / "out"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = lambda: [d.name for d in sorted((out / "trials").glob("*/")) if
                    (d / "manifest.json").exists() and json.loads((d / "manifest.json").read_text())["status"] == "done"]
    deadline = time.monotonic() + 240
    while len(done()) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished = done()
    assert 2 <= len(finished) < 4, finished
    before = {name: (out / "trials" / name / "results.json").read_bytes() for name in finished}
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"4 trial(s), {len(finished)} already done, {4 - len(finished)} to run" in " ".join(rerun.stdout.split())
    assert len(done()) == 4
    for name, blob in before.items():  # finished trials were not run again
        assert (out / "trials" / name / "results.json").read_bytes() == blob
    assert (out / "report.html").stat().st_size > 10_000
