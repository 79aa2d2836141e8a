"""Study files: typed parsing with clear errors, grid and random expansion, and resumable sweeps."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.experiments import study as studies
from normlab.experiments import sweep
from normlab.experiments.config import StudyConfig
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
    ('[config]\nseeds = "three"', "seeds must be an int in 1..1000, got 'three'"),
    ('[config]\nepochs = 2.5', "epochs must be an int in 1..100000, got 2.5"),
    ('[config]\nlearning_rate = 0', "learning_rate must be a number in (0, 3.4028234663852886e+38] as float32, got 0"),
    ('[config]\nbn_momentum = 1.5', "bn_momentum must be a number in [0, 1) as float32, got 1.5"),
    ('[config]\nbatch_size = 0', "batch_size must be an int in 1..67108864, got 0"),
    ('[config]\nbn_epsilon = -1', "bn_epsilon must be a number in (0, "),
    ('[config]\npresets = ["bn-sideways"]', "unknown preset 'bn-sideways'"),
    ('[config]\noptimizer = "lbfgs"', "optimizer must be one of sgd, momentum, adam"),
    ('[sweep]\nlearning_rate = [0.1, -1]', "sweep.learning_rate: learning_rate must be a number in (0, "),
    ('[sweep]\nlearning_rate = 0.1', "sweep.learning_rate must be a non-empty list"),
    ('[sweep.random]\nsamples = 2\nlearning_rate = { normal = [0, 1] }', "sweep.random.learning_rate must be"),
    ('[config\nseeds = 1', "not valid TOML"),
])
def test_config_errors_are_one_clear_line(text, fragment):
    assert fragment in refused(text)


def refused(text: str) -> str:
    """The message of the ConfigError that ``text`` must raise: one line that names the file."""
    with pytest.raises(ConfigError) as caught:
        studies.parse(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith("bad.toml") and "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("key,value,fragment", [
    ("learning_rate", "inf", "learning_rate must be a number in (0, 3.4028234663852886e+38] as float32, got inf"),
    ("learning_rate", "nan", "learning_rate must be a number in (0, "),
    ("learning_rate", "1e39", "got 1e+39"),
    ("learning_rate", "1e-50", "as float32, got 1e-50"),  # 0 in float32
    ("learning_rate", '"0.1"', "learning_rate must be a number"),
    ("learning_rate", "[0.1]", "learning_rate must be a number"),
    ("learning_rate", "true", "learning_rate must be a number"),
    ("bn_epsilon", "1e39", "bn_epsilon must be a number in (0, "),
    ("bn_momentum", "nan", "bn_momentum must be a number in [0, 1)"),
    ("bn_momentum", "0.999999999", "bn_momentum must be a number in [0, 1) as float32"),  # 1.0 in float32
    ("optimizer_momentum", "1.0", "optimizer_momentum must be a number in [0, 1)"),
    ("optimizer_momentum", "-inf", "optimizer_momentum must be a number in [0, 1)"),
    ("seeds", "1001", "seeds must be an int in 1..1000"),
    ("seeds", "true", "seeds must be an int in 1..1000, got True"),
    ("first_seed", "5000000000", "first_seed must be an int in 0..4294967295"),
    ("first_seed", "-1", "first_seed must be an int in 0..4294967295"),
    ("epochs", "100001", "epochs must be an int in 1..100000"),
    ("batch_size", "2000000000", "batch_size must be an int in 1..67108864"),
    ("batch_size", "2e9", "batch_size must be an int in 1..67108864"),
    ("subset", "0", "subset must be unset or an int in 1..67108864"),
    ("subset", "67108865", "subset must be unset or an int in 1..67108864"),  # beyond any data; the data's own
    # size is checked when it loads
    ("seeds_per_program", "0", "seeds_per_program must be unset or an int in 1..1000"),
    ("workers", "1025", "workers must be unset or an int in 1..1024"),
    ("workers", '"4"', "workers must be unset or an int in 1..1024, got '4'"),
    ("presets", "[]", "presets must be a non-empty list of distinct preset names"),
    ("presets", '["baseline", "baseline"]', "presets must be a non-empty list of distinct preset names"),
    ("presets", "[1]", "presets must be a non-empty list"),
    ("presets", "5", "presets must be a non-empty list"),
    ("optimizer", '["sgd"]', "optimizer must be one of sgd, momentum, adam, got ['sgd']"),
    ("optimizer", "1", "optimizer must be one of"),
])
def test_every_value_is_checked_with_its_range(key, value, fragment):
    assert fragment in refused(f"[config]\n{key} = {value}")
    assert fragment in refused(f"[sweep]\n{key} = [{value}]")


@pytest.mark.parametrize("sweep", ['data = ["mnist", "fashion-mnist"]', "val_split = [1000, 2000]",
                                   'random = {samples = 2, val_split = {choice = [1000, 2000]}}'])
def test_a_sweep_cannot_vary_the_dataset(sweep):
    """A sweep's worker pool holds one dataset's arrays for every trial: a trial on other data would train on them."""
    assert "cannot vary" in refused(f"[sweep]\n{sweep}")
    assert "val_split must be unset or an int in 1..67108864" in refused("[config]\nval_split = 0")


@pytest.mark.parametrize("text,fragment", [
    ('name = 5', "name must be a folder name"),
    ('name = "../../etc"', "name must be a folder name of at most 100 letters, digits, '.', '_', '-', not starting"),
    ('name = ".hidden"', "not starting with '.', got '.hidden'"),
    ('name = "a b"', "name must be a folder name"),
    (f'name = "{"a" * 101}"', "name must be a folder name"),
    ('description = 5', "description must be a string, got 5"),
    ('config = 5', "config must be a table ([config]), got 5"),
    ('sweep = 5', "sweep must be a table ([sweep]), got 5"),
    ('[sweep]\nrandom = 5', "random must be a table"),
    ('[sweep]\nlearning_rate = []', "sweep.learning_rate must be a non-empty list of at most 1000 values"),
    ('[sweep]\nepochs = [' + ", ".join(["1"] * 1001) + "]", "sweep.epochs must be a non-empty list of at most 1000"),
    ('[sweep]\nepochs = [' + ", ".join(map(str, range(1, 102))) + "]\nseeds = [" +
     ", ".join(map(str, range(1, 102))) + "]", "the sweep grid has 10,201 combinations, more than 10,000"),
    ('[sweep]\nlearning_rat = [0.1]', "unknown config key 'learning_rat'; did you mean 'learning_rate'?"),
    ('[config]\nfirst_seed = 4294967290\n[sweep]\nseeds = [1, 10]',
     "trial 001-seeds=10: first_seed + seeds - 1 must be below 2**32"),
    ("a = " + "[" * 100_000, "not valid TOML (too deeply nested)"),
    ("[config]\nseeds = 1" + "0" * 5000, "not valid TOML"),
    ('description = "\ud800"', "not UTF-8 text"),
])
def test_malformed_study_structure_is_one_clear_line(text, fragment):
    assert fragment in refused(text)


RANDOM = "[sweep.random]\nsamples = 2\n"


@pytest.mark.parametrize("text,fragment", [
    ('[sweep.random]\nsamples = "x"\nlearning_rate = { uniform = [0.1, 1] }', "samples must be an int in 0..10000"),
    ('[sweep.random]\nsamples = -1\nlearning_rate = { uniform = [0.1, 1] }', "samples must be an int in 0..10000"),
    ('[sweep.random]\nsamples = 1e9\nlearning_rate = { uniform = [0.1, 1] }', "samples must be an int in 0..10000"),
    ('[sweep.random]\nsamples = 10001\nlearning_rate = { uniform = [0.1, 1] }', "samples must be an int in 0..10000"),
    ('[sweep.random]\nsamples = true\nlearning_rate = { uniform = [0.1, 1] }', "samples must be an int"),
    (RANDOM + 'seed = "x"\nlearning_rate = { uniform = [0.1, 1] }', "seed must be an int, got 'x'"),
    (RANDOM + 'seed = true\nlearning_rate = { uniform = [0.1, 1] }', "seed must be an int, got True"),
    (RANDOM, "samples = 2 with 0 key(s) to sample; random trials need both"),
    ('[sweep.random]\nlearning_rate = { uniform = [0.1, 1] }', "samples = 0 with 1 key(s) to sample"),
    (RANDOM + "learning_rate = { choice = [] }", "sweep.random.learning_rate.choice must be a non-empty list"),
    (RANDOM + "learning_rate = { choice = 5 }", "sweep.random.learning_rate.choice must be a non-empty list"),
    (RANDOM + "learning_rate = { choice = [0.1, -1] }", "learning_rate must be a number in (0, "),
    (RANDOM + "learning_rate = { uniform = [1] }", "sweep.random.learning_rate.uniform must be [a, b], two finite"),
    (RANDOM + 'learning_rate = { uniform = "ab" }', "sweep.random.learning_rate.uniform must be [a, b]"),
    (RANDOM + 'learning_rate = { uniform = [1, "x"] }', "sweep.random.learning_rate.uniform must be [a, b]"),
    (RANDOM + "learning_rate = { uniform = [true, 1] }", "sweep.random.learning_rate.uniform must be [a, b]"),
    (RANDOM + "learning_rate = { uniform = [2, 1] }", "two finite numbers with a <= b, got [2, 1]"),
    (RANDOM + "learning_rate = { uniform = [nan, 1] }", "sweep.random.learning_rate.uniform must be [a, b]"),
    (RANDOM + "learning_rate = { uniform = [0.1, inf] }", "sweep.random.learning_rate.uniform must be [a, b]"),
    (RANDOM + "learning_rate = { uniform = [0, 1] }", "learning_rate must be a number in (0, "),
    (RANDOM + "learning_rate = { log_uniform = [-1, 1] }", "log_uniform must be [a, b], two finite numbers with 0 < a"),
    (RANDOM + "learning_rate = { log_uniform = [0, 1] }", "two finite numbers with 0 < a <= b"),
    (RANDOM + "bn_momentum = { uniform = [0.9, 1] }", "bn_momentum must be a number in [0, 1)"),
    (RANDOM + "learning_rate = { uniform = [0.1, 1], choice = [0.1] }", "sweep.random.learning_rate must be one of"),
    (RANDOM + "learning_rate = 5", "sweep.random.learning_rate must be one of { uniform = [a, b] }"),
    (RANDOM + "batch_size = { uniform = [16, 64] }", "uniform draws real numbers but batch_size is not one; use"),
    (RANDOM + "optimizer = { log_uniform = [1, 2] }", "log_uniform draws real numbers but optimizer is not one"),
    (RANDOM + "learning_rat = { choice = [0.1] }", "unknown config key 'learning_rat'; did you mean"),
])
def test_malformed_random_sweeps_are_one_clear_line(text, fragment):
    assert fragment in refused(text)


def test_random_choices_are_typed_like_grid_values_and_draws_stay_in_range():
    text = (RANDOM.replace("2", "50") + "batch_size = { choice = [16, 32] }\npresets = { choice = [\"baseline\"] }\n"
            "bn_momentum = { uniform = [0.9, 0.99] }\nlearning_rate = { log_uniform = [0.5, 0.5] }\n")
    drawn = [o for _, o in trials(studies.parse(text, "t.toml"))][1:]  # after the base configuration
    assert len(drawn) == 50 and {o["batch_size"] for o in drawn} <= {16, 32}
    assert all(o["presets"] == ("baseline",) and 0.9 <= o["bn_momentum"] <= 0.99 and o["learning_rate"] == 0.5
               for o in drawn)


def test_trial_folder_names_stay_short_and_unique_when_every_key_is_swept():
    text = ('[sweep]\npresets = [["baseline", "bn-after", "bn-before"]]\nseeds = [1000]\nfirst_seed = [4294960000]\n'
            "epochs = [100000]\nlearning_rate = [3.4e38]\nbatch_size = [55000, 54999]\nbn_momentum = [0.999999]\n"
            'bn_epsilon = [1.2345e-07]\nsubset = [55000]\noptimizer = ["momentum"]\noptimizer_momentum = [0.999999]\n'
            "seeds_per_program = [1000]\nworkers = [1024]\n")
    ids = [tid for tid, _ in trials(studies.parse(text, "t.toml"))]
    assert len(set(ids)) == 2 and all(len(tid) <= studies.MAX_TRIAL_ID for tid in ids)


@pytest.mark.parametrize("fields,fragment", [
    (dict(first_seed=5_000_000_000), "first_seed must be an int in 0..4294967295"),
    (dict(first_seed=2**32 - 3, seeds=5), "first_seed + seeds - 1 must be below 2**32 (seeds are uint32), got 4294967"),
    (dict(batch_size=2e9), "batch_size must be an int in 1..67108864"),
    (dict(seeds=10**5000), "seeds must be an int in 1..1000, got <an int of 16610 bits>"),
    (dict(learning_rate=10**400), "learning_rate must be a number in (0, "),
    (dict(learning_rate=np.float32("nan")), "learning_rate must be a number in (0, "),
    (dict(learning_rate="0.1"), "learning_rate must be a number in (0, "),
    (dict(bn_momentum=None), "bn_momentum must be a number in [0, 1)"),
    (dict(workers=True), "workers must be unset or an int in 1..1024, got True"),
    (dict(seeds=np.bool_(True)), "seeds must be an int"),
    (dict(epochs=[3]), "epochs must be an int in 1..100000, got [3]"),
    (dict(presets="baseline"), "presets must be a non-empty list of distinct preset names"),
    (dict(presets=()), "presets must be a non-empty list"),
    (dict(presets=(["baseline"],)), "presets must be a non-empty list"),
    (dict(presets=("bn-sideways",)), "unknown preset 'bn-sideways'"),
    (dict(optimizer={"sgd": 1}), "optimizer must be one of sgd, momentum, adam"),
    (dict(optimizer="x" * 10_000), "optimizer must be one of sgd, momentum, adam, got 'xxxxxxxxxxxx...xxxxxxxxxxxxx'"),
    (dict(lr_batch=0), "lr_batch must be unset or an int in 1..67108864"),
    (dict(learning_rate=3e38, lr_batch=1, batch_size=32), "learning_rate * batch_size / lr_batch is 9.6e+39, beyond"),
    (dict(models={"t": {"layers": [{"kind": "flatten"}, {"kind": "batch_norm", "convention": "pytorch"},
                                   {"kind": "dense", "units": 10}]}}, presets=("t",), batch_size=1),
     "model t at batch size 1: batch_norm (convention pytorch): expected more than 1 value per feature"),
])
def test_python_callers_get_the_same_checks(fields, fragment):
    with pytest.raises(ConfigError) as caught:
        StudyConfig(**fields)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError):
        StudyConfig.from_dict(fields)


def test_valid_values_are_normalized_so_equal_configs_compare_equal():
    config = StudyConfig(presets=["bn-after"], learning_rate=1, seeds=np.int64(2), bn_momentum=np.float32(0.5))
    assert config == StudyConfig(presets=("bn-after",), learning_rate=1.0, seeds=2, bn_momentum=0.5)
    assert type(config.learning_rate) is float and type(config.seeds) is int and config.presets == ("bn-after",)
    assert StudyConfig.from_dict(config.as_dict()) == config
    with pytest.raises(ConfigError, match="must be a dict of fields"):
        StudyConfig.from_dict(["seeds", 2])


def test_a_file_cannot_stand_in_for_a_builtin_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").write_text('[config]\nlearning_rate = 0.5\n')
    assert studies.load("seed").base.learning_rate == 1e-3 == studies.builtin("seed").base.learning_rate
    assert studies.load("./seed").base.learning_rate == 0.5  # a path is a file
    (tmp_path / "mine.toml").write_text('[config]\nseeds = 2\n')
    assert studies.load("mine.toml").base.seeds == 2 and studies.load(tmp_path / "mine.toml").name == "mine"
    with pytest.raises(ConfigError, match="no built-in study 'mine'; .*a study file is a path: ./NAME or NAME.toml"):
        studies.load("mine")
    with pytest.raises(ConfigError, match="no built-in study 'sed'; did you mean 'seed'\\?"):
        studies.builtin("sed")


@pytest.mark.parametrize("make,fragment", [
    (lambda d: d / "missing.toml", r"missing.toml: cannot open \(No such file or directory\)"),
    (lambda d: d, "not a regular file|Is a directory"),
    (lambda d: (os.mkfifo(d / "fifo.toml"), d / "fifo.toml")[1], "not a regular file"),
    (lambda d: "/dev/zero", "not a regular file"),
    (lambda d: (d / "big.toml").write_text("#" * (2 << 20)) and d / "big.toml", "more than the 1,048,576 expected"),
    (lambda d: (d / "latin1.toml").write_bytes('description = "Géron"'.encode("latin-1")) and d / "latin1.toml",
     "not UTF-8 text"),
])
def test_unreadable_study_files_are_one_clear_line(tmp_path, make, fragment):
    with pytest.raises(ConfigError) as caught:
        studies.load(make(tmp_path))
    message = str(caught.value)
    assert message.startswith("study file ") and re.search(fragment, message) and "\n" not in message, message


@pytest.mark.full_data
def test_killed_sweep_reruns_only_the_missing_trials(tmp_path, cli_env):
    """Killed once its first two trials are done, with the last two held where they start (so none of them can
    finish first, however fast the machine): the rerun runs exactly those two, and leaves the done ones alone.

    The hold: those two trials find a damaged checkpoint to skip, and reading it is a stage the sweep's processes
    wait at (``NORMLAB_TEST_PAUSE_AT``). The checkpoints go into a run folder made by a first start, killed while
    held at loading the data.
    """
    study = tmp_path / "sweep.toml"
    study.write_text('name = "resume"\n[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 1\nsubset = 300\n'
                     '[sweep]\nlearning_rate = [0.001, 0.01, 0.1, 1.0]\n')
    ids = [tid for tid, _ in trials(studies.load(study))]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out)]
    kill_held(command, cli_env, tmp_path / "stages-data", "data", lambda stages: "data" in stages)
    for tid in ids[2:]:
        damaged = out / "trials" / tid / "checkpoints" / "bn-after" / "epoch-0001.safetensors"
        damaged.parent.mkdir(parents=True)
        damaged.write_bytes(b"not a checkpoint")
    done = lambda: [tid for tid in ids if sweep.status(out / "trials" / tid) == "done"]
    kill_held(command, cli_env, tmp_path / "stages-read", "checkpoint-read", lambda stages: done() == ids[:2])
    assert done() == ids[:2]
    before = {tid: (out / "trials" / tid / "results.json").read_bytes() for tid in ids[:2]}
    rerun = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 trial(s), 2 already done, 2 to run" in " ".join(rerun.stdout.split())
    assert rerun.stdout.count("skipping damaged checkpoint") == 2
    assert done() == ids
    for tid, blob in before.items():  # finished trials were not run again
        assert (out / "trials" / tid / "results.json").read_bytes() == blob
    assert (out / "report.html").stat().st_size > 10_000


def kill_held(command, env, stages, stage, ready) -> None:
    """Start ``command`` with its processes held at ``stage``; once ``ready(the stage log's text)``, SIGKILL the
    process and its workers together."""
    proc = subprocess.Popen(command, env={**env, "NORMLAB_TEST_STAGES": str(stages), "NORMLAB_TEST_PAUSE_AT": stage},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready(stages.read_text() if stages.exists() else ""):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def test_a_swept_list_of_presets_is_recorded_as_one_text():
    """results.json settings hold scalars only: a swept presets list once made the sweep's report refuse them."""
    overrides = {"presets": ("bn-after", "baseline"), "learning_rate": 0.1}
    assert studies.setting(overrides) == {"presets": "bn-after,baseline", "learning_rate": 0.1}
    assert studies.trial_id(3, overrides) == "003-presets=bn-after,baseline-learning_rate=0.1"


def test_lr_batch_scales_the_learning_rate_linearly_with_the_batch():
    """Goyal et al.'s rule: lr 0.01 meant for batch 32 is 0.0025 at batch 8 and 0.08 at batch 256."""
    assert StudyConfig(learning_rate=0.01, lr_batch=32, batch_size=8).train_config().learning_rate == 0.0025
    assert StudyConfig(learning_rate=0.01, lr_batch=32, batch_size=256).train_config().learning_rate == 0.08
    assert StudyConfig(learning_rate=0.01, batch_size=256).train_config().learning_rate == 0.01
