"""Every file normlab reads, through the real CLI: the tuning cache, model files, checkpoints and results.json.

Damaged or hostile content is one line (for the tuning cache: the default engine), never a hang, a traceback or
all of memory. A process that would hang is killed by its timeout, so the test fails instead of blocking.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from clitools import TINY, finished_run, normlab, one_line_error, session_cache  # noqa: F401
from conftest import cache_home
from normlab.cli import main
from normlab.diagnose.config import DiagnoseConfig
from normlab.diagnose.study import _identity, _kept
from normlab.experiments.config import StudyConfig
from normlab.interop.keras_io import load_keras
from normlab.train import checkpoint

DEEP = 100_000  # far past Python's recursion limit
MEMORY_MB = 3000  # `train` needs ~1,900 MB of address space; reading /dev/zero would take all there is


def cli(capsys, *args):
    """``normlab ARGS`` in this process (Keras and JAX loaded once for the whole file): exit code and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


# The tuning cache: every command reads it at start.

DAMAGES = ["nested", "fifo", "dev_zero"]


def damaged_cache(folder: Path, cli_env: dict, damage: str) -> dict:
    """The environment of a `normlab` process whose tuned.json is damaged, without the tests' NORMLAB_ENGINE (so
    the cache is read); compiled programs come from the session's cache."""
    home = cache_home(folder)
    compiled = Path(cli_env["XDG_CACHE_HOME"]) / "normlab" / "xla"
    compiled.mkdir(parents=True, exist_ok=True)
    (home / "normlab" / "xla").symlink_to(compiled)
    tuned = home / "normlab" / "engine" / "tuned.json"
    tuned.parent.mkdir(parents=True)
    if damage == "nested":
        tuned.write_text("[" * DEEP + "]" * DEEP)
    elif damage == "fifo":
        os.mkfifo(tuned)  # opening it would wait for a writer forever
    else:
        tuned.symlink_to("/dev/zero")  # reading it would never end
    return {"XDG_CACHE_HOME": str(home), "NORMLAB_ENGINE": ""}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_tuning_cache_stops_no_command(tmp_path, cli_env, damage):
    env = damaged_cache(tmp_path / "cache", cli_env, damage)
    code, out, err = normlab("summary", "bn-after", env=env, limit_mb=MEMORY_MB, timeout=120)
    assert code == 0 and "Total params: 271,346" in out, err


@pytest.mark.full_data
@pytest.mark.parametrize("damage", DAMAGES)
def test_training_past_a_damaged_tuning_cache_runs_the_default_engine(tmp_path, cli_env, damage):
    env = damaged_cache(tmp_path / "cache", cli_env, damage)
    out = tmp_path / "run"
    code, _, err = normlab("train", "bn-after", *TINY, "--out", out, env=env, limit_mb=MEMORY_MB, timeout=300)
    assert code == 0, err
    engine = json.loads((out / "results.json").read_text())["provenance"]["engine"]
    assert (engine["gemm"], engine["flags"], engine["source"]) == ("xla", "no-library-fusion", "default")


# normlab's own model files: the model's description is JSON inside the safetensors header.

def test_a_model_file_with_a_deeply_nested_description_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.safetensors"
    spec = '{"name": "deep", "layers": ' + "[" * DEEP + "]" * DEEP + "}"
    path.write_bytes(safetensors.numpy.save({}, metadata={"format": "normlab-model-1", "model": spec}))
    one_line_error(*cli(capsys, "evaluate", path), "deep.safetensors", "model description", "nested")


def test_a_model_file_with_a_deeply_nested_header_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.safetensors"
    header = b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    one_line_error(*cli(capsys, "evaluate", path), "deep.safetensors", "nested more than 32 levels deep")


# .keras files: Keras checks little of a layer's config, and says why it refuses a file at length.

def keras_models():
    """name -> (a Keras model to save, what the one-line refusal must say)."""
    k = load_keras()

    def renorm(clipping):
        return k.Sequential([k.Input((28, 28)), k.layers.Flatten(),
                             k.layers.BatchNormalization(renorm=True, renorm_clipping=clipping),
                             k.layers.Dense(10, activation="softmax")])

    return {
        "rmax a string": (renorm({"rmax": "abc", "dmax": 5.0}), "rmax must be a number"),
        "rmax a list": (renorm({"rmax": [3.0]}), "rmax must be a number"),
        "rmax NaN": (renorm({"rmax": float("nan")}), "rmax must be a number"),
        "dmax beyond a float": (renorm({"dmax": 10**400}), "dmax must be a number"),
        "no input shape": (k.Sequential([k.layers.Flatten(), k.layers.Dense(10)]), "no defined input shape"),
        # Keras' refusal is 363 characters: its end says how to load the file anyway.
        "a Python lambda": (k.Sequential([k.Input((28, 28)), k.layers.Flatten(), k.layers.Lambda(lambda x: x * 2),
                                          k.layers.Dense(10)]), "passing `safe_mode=False` to the loading function"),
    }


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    found = {}
    for name, (model, says) in keras_models().items():
        path = folder / f"{name.replace(' ', '-')}.keras"
        model.save(path)
        found[name] = (path, says)
    return found


@pytest.mark.parametrize("case", ["rmax a string", "rmax a list", "rmax NaN", "dmax beyond a float",
                                  "no input shape", "a Python lambda"])
def test_a_keras_file_keras_loads_but_normlab_cannot_read_is_one_line(keras_files, capsys, case):
    path, says = keras_files[case]
    one_line_error(*cli(capsys, "evaluate", path), path.name, says)


# A run folder's checkpoints and results.json, as export and evaluate read them.

@pytest.fixture
def run_copy(tmp_path, finished_run):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def rewrite_checkpoint(run: Path, change) -> None:
    """The run's checkpoint, ``change(arrays, record)`` applied, with a digest that matches again: a crafted file."""
    path = run / "checkpoints" / "bn-after" / "epoch-0001.safetensors"
    blob = path.read_bytes()
    record = json.loads(json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])["__metadata__"]["normlab"])
    arrays = safetensors.numpy.load(blob)
    change(arrays, record)
    path.write_bytes(safetensors.numpy.save(arrays, metadata={"normlab": json.dumps(record),
                                                              "sha256": checkpoint._digest(arrays, record)}))


def without_seeds(arrays, record):
    del record["seeds"]


def seeds_text(arrays, record):
    record["seeds"] = "0"


def seed_beyond_uint32(arrays, record):
    record["seeds"] = [0, 2**40]


def seeds_repeated(arrays, record):
    record["seeds"] = [0, 0]


@pytest.mark.full_data
@pytest.mark.parametrize("command", ["export", "evaluate"])
@pytest.mark.parametrize("change", [without_seeds, seeds_text, seed_beyond_uint32, seeds_repeated])
def test_a_crafted_checkpoint_record_with_a_valid_digest_is_one_line(run_copy, capsys, command, change):
    rewrite_checkpoint(run_copy, change)
    one_line_error(*cli(capsys, command, run_copy), "holds no intact checkpoint of bn-after seed 0",
                   "malformed record (seeds")
    assert not (run_copy / "export").exists()


def not_finite(arrays, record):
    arrays[".params['dense']['kernel']"][0, 5, 7] = np.nan


@pytest.mark.full_data
@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_a_checkpoint_of_weights_that_are_not_finite_is_refused(run_copy, capsys, command):
    rewrite_checkpoint(run_copy, not_finite)
    one_line_error(*cli(capsys, command, run_copy), "not finite (NaN or inf)", "damaged")
    assert not (run_copy / "export").exists()


@pytest.mark.full_data
@pytest.mark.parametrize("config,says", [(None, "no 'config' object"), ([1], "no 'config' object"),
                                         ({"seeds": "x"}, "seeds must be an int"),
                                         ({"presets": ["nonesuch"]}, "unknown preset 'nonesuch'")])
def test_a_results_json_without_a_usable_config_is_named(run_copy, capsys, config, says):
    results = json.loads((run_copy / "results.json").read_text())
    if config is None:
        del results["config"]
    else:
        results["config"] = config
    (run_copy / "results.json").write_text(json.dumps(results))
    for command in ("export", "evaluate"):
        one_line_error(*cli(capsys, command, run_copy), f"{run_copy / 'results.json'}: ", says)


# A diagnosis resumed: a kept preset entry is checked as the report checks it.

def test_a_kept_diagnosis_entry_that_the_report_could_not_read_is_diagnosed_again(tmp_path):
    study, diagnosis = StudyConfig(), DiagnoseConfig(presets=("bn-after",))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bn-after.json").write_text(json.dumps(
        {"identity": _identity(study, diagnosis, "bn-after"), "result": {"seeds": "x"}}))
    warnings = []
    assert _kept(tmp_path, study, diagnosis, warnings.append) == {}
    assert len(warnings) == 1 and "needs 'seeds'" in warnings[0] and "diagnosed again" in warnings[0]


# Study files: numbers beyond a float in the option checks of a model's layers and of [diagnose].

@pytest.mark.parametrize("text,says", [
    ('[models.m]\nlayers = [{kind = "flatten"}, {kind = "batch_norm", momentum = 1' + "0" * 400 + '},'
     ' {kind = "dense", units = 10}]\n[config]\npresets = ["m"]\n', "momentum must be a number in [0, 1)"),
    ("[diagnose]\netas = [1" + "0" * 400 + "]\n", "etas must be a list"),
    ("[config]\npresets = " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels deep"),
])
def test_a_study_file_of_numbers_beyond_a_float_or_deep_nesting_is_one_line(tmp_path, capsys, text, says):
    study = tmp_path / "study.toml"
    study.write_text(text)
    one_line_error(*cli(capsys, "run", study, "--out", tmp_path / "out"), "study.toml", says)
    assert not (tmp_path / "out").exists()
