"""Memory decided before work: a study whose activations cannot fit is refused in one line before anything is
written, the presets and built-in studies are not, and running out anyway at run time is one line too."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from clitools import normlab, one_line_error, session_cache  # noqa: F401
from normlab import memory
from normlab.errors import ConfigError
from normlab.experiments import sweep
from normlab.experiments.config import StudyConfig
from normlab.experiments.study import builtin, builtin_studies, parse
from normlab.nn.models import build
from normlab.train.loop import make_optimizer, seeds_epoch
from normlab.train.state import create
from normlab.train.step import EVAL_CHUNK, make_chunk_sums

TINY = ["--subset", "500", "--epochs", "1"]
# The model: 1.68 M parameters, but three 64-filter "same" convolutions on 28x28 images, whose im2col
# patches take 1.8 MB per image: 3.6 GB for one 1,000-image evaluation chunk.
WIDE_CONV = """
[models.wide-conv]
layers = [
  {kind = "reshape", target_shape = [28, 28, 1]},
  {kind = "conv2d", filters = 64, kernel_size = 3, padding = "same", activation = "relu"},
  {kind = "conv2d", filters = 64, kernel_size = 3, padding = "same", activation = "relu"},
  {kind = "conv2d", filters = 64, kernel_size = 3, padding = "same", activation = "relu"},
  {kind = "flatten"},
  {kind = "dense", units = 32, activation = "relu"},
  {kind = "dense", units = 10, activation = "softmax"},
]
[config]
presets = ["wide-conv"]
seeds = 2
epochs = 1
subset = 500
"""
LIMIT_MB = 3000  # RLIMIT_AS: a JAX process reserves 1.5 GB of address space; cnn-bn trains within this


@pytest.fixture(scope="module")
def wide_study(tmp_path_factory):
    path = tmp_path_factory.mktemp("wide") / "wide.toml"
    path.write_text(WIDE_CONV, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [["run", "STUDY"], ["reproduce", "--study", "STUDY", *TINY],
                                     ["train", "wide-conv", "--study", "STUDY", *TINY]])
def test_a_model_whose_activations_cannot_fit_is_refused_before_any_work(wide_study, tmp_path, command):
    out = tmp_path / "run"
    args = [str(wide_study) if arg == "STUDY" else arg for arg in command]
    code, _, err = normlab(*args, "--out", out, limit_mb=LIMIT_MB, timeout=300)
    one_line_error(code, err, "not enough memory: wide-conv at batch size 32", "per training process",
                   f"RLIMIT_AS ({LIMIT_MB * 2**20 / 1e9:.1f} GB) leaves", "a smaller batch size",
                   "smaller subset does not help")
    assert not out.exists()


@pytest.mark.full_data
def test_a_model_that_fits_trains_under_the_same_limit(tmp_path):
    code, _, err = normlab("train", "cnn-bn", *TINY, "--out", tmp_path / "run", limit_mb=LIMIT_MB, timeout=300)
    assert code == 0, err
    assert (tmp_path / "run" / "results.json").is_file()


def test_the_presets_and_built_in_studies_fit_a_4_gb_machine(monkeypatch):
    """Two workers of every built-in study (cnn-bn's 5 seeds, the CNNs of norms-vs-batch-size at batch 256...), or
    as many as it sets (resnets: one)."""
    monkeypatch.setattr(memory, "headroom", lambda: [(4 * 10**9, "a 4 GB machine", False, False)])
    for name in builtin_studies():
        sweep.check_trials_fit(builtin(name), builtin(name).base.workers or 2)
    sweep.check_trials_fit(parse('[config]\npresets = ["cnn-bn", "cnn-gn", "cnn-ln"]\n', "cnn.toml"), 2)


def test_processes_at_once_share_the_machine_but_not_a_process_limit(monkeypatch):
    study = parse('[config]\npresets = ["cnn-bn"]\n', "cnn.toml")
    need = memory.training_bytes(study.base.model("cnn-bn"), study.base.train_config(), 1, 55_000, 15_000)
    monkeypatch.setattr(memory, "headroom", lambda: [(need * 3 // 2, "RLIMIT_AS", True, False)])
    sweep.check_trials_fit(study, 2)  # 2 processes of 1 need each: each within its own limit
    monkeypatch.setattr(memory, "headroom", lambda: [(need * 3 // 2, "the memory available", False, False)])
    sweep.check_trials_fit(study, 1)
    with pytest.raises(ConfigError, match="for 2 at once, but the memory available leaves "):
        sweep.check_trials_fit(study, 2)


def xla_temp_bytes(program, *args) -> int:
    """XLA's own buffer assignment: the temporary bytes of ``program`` compiled for ``args`` (nothing runs)."""
    return program.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_the_activation_estimate_covers_what_xla_allocates():
    """The issue's model at batch 256 and a 1,000-image evaluation chunk: the estimate is at least what XLA's
    compiled programs take, and within 1.5x of it."""
    model = build("wide-conv", parse(WIDE_CONV, "wide.toml").base.models["wide-conv"]["layers"])
    train = StudyConfig(presets=("baseline",), batch_size=256).train_config()
    state = jax.vmap(lambda seed: create(model, make_optimizer(train), seed))(jnp.zeros(1, jnp.uint32))
    images = jnp.zeros((512, 28, 28), jnp.uint8)
    trained = xla_temp_bytes(seeds_epoch(model, train, 512), state, images, jnp.zeros(512, jnp.int32), jnp.int32(0),
                             jnp.float32(0.001))
    chunk = jax.jit(jax.vmap(make_chunk_sums(model), in_axes=(0, 0, None, None, None)))
    evaluated = xla_temp_bytes(chunk, state.params, state.model_state, jnp.zeros((EVAL_CHUNK, 28, 28), jnp.uint8),
                               jnp.zeros(EVAL_CHUNK, jnp.int32), jnp.zeros(EVAL_CHUNK, jnp.float32))
    for measured, estimate in ((trained, memory.activation_bytes(model, 256, True)),
                               (evaluated, memory.activation_bytes(model, EVAL_CHUNK, False))):
        assert measured <= estimate <= 1.5 * measured, (measured, estimate)


# The real CLI (``cli.main``) and API in a child whose training, or data loading, asks XLA for 4 TiB: XLA's own
# RESOURCE_EXHAUSTED, raised inside the worker pool's job (``fit``) or outside it (loading the data). The API's
# NormlabError is printed after the number of frames its traceback holds.
OOM = """import sys, traceback
import jax.numpy as jnp
import normlab
from normlab import cli
from normlab.api import running
from normlab.experiments import reproduce
where, caller, out, data_dir = sys.argv[1:]

def exhausted(*args, **kwargs):
    jnp.zeros(1 << 40, jnp.float32).block_until_ready()

setattr(reproduce if where == "fit" else running, where, exhausted)
if caller == "python":
    try:
        normlab.train("bn-after", subset=500, epochs=1, out=out, data_dir=data_dir, verify=False, progress=False)
    except normlab.errors.NormlabError as error:
        sys.exit(f"{len(list(traceback.walk_tb(error.__traceback__)))} {error}")
sys.exit(cli.main(["train", "bn-after", "--subset", "500", "--epochs", "1", "--data-dir", data_dir, "--no-verify",
                   "--out", out]))
"""


@pytest.mark.parametrize("where", ["fit", "data"])
@pytest.mark.parametrize("caller", ["cli", "python"])
def test_running_out_of_memory_at_run_time_is_one_line(tmp_path, data_dir, where, caller):
    run = subprocess.run([sys.executable, "-c", OOM, where, caller, str(tmp_path / "run"), str(data_dir)],
                         capture_output=True, text=True, timeout=300)
    err = run.stderr.strip()
    if caller == "cli":
        one_line_error(run.returncode, err, "out of memory (RESOURCE_EXHAUSTED: Out of memory allocating",
                       "a smaller batch size")
    else:  # raised from the public call (its frame and the caller's), as any user error of the API is
        assert run.returncode == 1 and err.startswith("2 out of memory (RESOURCE_EXHAUSTED"), err
