"""The final weights of a finished run: its results.json says which presets and seeds it trained and for how many
epochs; the newest intact checkpoint of the seed's program (``experiments.reproduce.Job.checkpoints``) holds them.

A checkpoint holds a whole program's seeds (vmapped), so the seed is picked out of its leading axis. Only a
checkpoint of the run's last epoch is the final model: anything older is refused, not exported as if it were.
"""

from pathlib import Path

import jax
import jax.numpy as jnp

from normlab.errors import CheckpointError, ConfigError, shown
from normlab.experiments.config import StudyConfig
from normlab.files import one_line
from normlab.interop.weights import Weights
from normlab.report.results_json import Run, load_results, runs
from normlab.train import checkpoint
from normlab.train.loop import make_optimizer
from normlab.train.state import create


def finished_runs(run_dir: Path, preset: str | None = None,
                  seed: int | None = None) -> tuple[StudyConfig, list[Run]]:
    """The run folder's study and the runs ``preset`` and ``seed`` select (None: every one of them)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{one_line(run_dir)} has no results.json: give the folder of a finished normlab train or "
                          f"reproduce run (a sweep's runs are in its trials/ folders)")
    results = load_results(path)
    config = _study(results, path)
    found = runs(results)
    presets = list(dict.fromkeys(r.preset for r in found))
    if preset is not None and preset not in presets:
        raise ConfigError(f"{one_line(run_dir)} has no preset {shown(preset)}; it trained "
                          f"{one_line(', '.join(presets))}")
    chosen = [r for r in found if preset in (None, r.preset) and seed in (None, r.seed)]
    if not chosen:
        raise ConfigError(f"{one_line(run_dir)} has no seed {seed} of {one_line(preset or 'any preset')}; "
                          f"seeds: {', '.join(str(r.seed) for r in found if preset in (None, r.preset))}")
    return config, chosen


def _study(results: dict, path: Path) -> StudyConfig:
    """The study that results.json's ``config`` records: the settings its checkpoints were trained with."""
    if not isinstance(results.get("config"), dict):
        raise ConfigError(f"{one_line(path)}: no 'config' object saying how its runs were trained; is it a "
                          f"results.json of normlab train or reproduce?")
    try:
        return StudyConfig.from_dict(results["config"])
    except ConfigError as error:
        raise ConfigError(f"{one_line(path)}: its config: {error}") from None


def one_run(run_dir: Path, preset: str | None, seed: int | None) -> tuple[StudyConfig, Run]:
    """The single run that ``preset`` and ``seed`` pick; the first seed is the default, the preset only when the
    folder has one."""
    config, chosen = finished_runs(run_dir, preset, seed)
    presets = list(dict.fromkeys(r.preset for r in chosen))
    if len(presets) > 1:
        raise ConfigError(f"{one_line(run_dir)} trained {one_line(', '.join(presets))}: choose one with --preset")
    return config, chosen[0]


def final_weights(run_dir: Path, config: StudyConfig, run: Run) -> Weights:
    """``run``'s weights after its last epoch, from the run folder's checkpoints; never weights that are not
    finite (a checkpoint's digest says nothing of its values)."""
    if run.diverged:
        raise ConfigError(f"{run.preset} seed {run.seed} diverged at epoch {run.diverged_epoch}: its weights are not "
                          f"finite, nothing to take out")
    model = config.model(run.preset)
    folder = Path(run_dir) / "checkpoints" / run.preset
    skipped: list[str] = []  # why damaged checkpoints were passed over, newest first: said if none is left
    for directory in [folder, *sorted(folder.glob("seeds-*"))]:
        if not checkpoint.checkpoints(directory):
            continue
        try:
            found = checkpoint.latest(directory, config.identity(run.preset), _max_bytes(model, config),
                                      warn=skipped.append, unchecked=("init_from", "data_sha256"))  # the run's own
        except CheckpointError as error:
            raise ConfigError(str(error)) from None
        if found is None or run.seed not in found[1]["seeds"]:
            continue
        arrays, record = found
        epochs = len(run.history["loss"])
        if record["epoch"] != epochs:
            raise ConfigError(f"the newest intact checkpoint of {run.preset} seed {run.seed} is of epoch "
                              f"{record['epoch']}, but the run trained {epochs}: its final weights are lost")
        seeds = record["seeds"]
        optimizer = make_optimizer(config.train_config())
        like = jax.vmap(lambda s: create(model, optimizer, s))(jnp.asarray(seeds, jnp.uint32))
        try:
            state = checkpoint.restore(arrays, like)
        except CheckpointError as error:
            raise ConfigError(f"{one_line(directory)}: {error}") from None
        index = seeds.index(run.seed)
        weights = Weights(model, *jax.tree.map(lambda a: a[index], (state.params, state.model_state)))
        if not weights.finite():
            raise ConfigError(f"{one_line(directory)}: the epoch {record['epoch']} checkpoint of {run.preset} seed "
                              f"{run.seed} holds weights that are not finite (NaN or inf), yet results.json records "
                              f"no divergence: the checkpoint is damaged, nothing to take out")
        return weights
    raise ConfigError(f"{one_line(folder)} holds no intact checkpoint of {run.preset} seed {run.seed}"
                      + (f" ({skipped[0]})" if skipped else ""))


def _max_bytes(model, config: StudyConfig) -> int:
    """A generous bound on one checkpoint file: the training state of all the study's seeds (a PRNG key, 2 words)."""
    one = jax.eval_shape(lambda: create(model, make_optimizer(config.train_config()), 0))
    return config.seeds * sum(leaf.size * 8 for leaf in jax.tree.leaves(one)) + checkpoint.HEADER_BYTES
