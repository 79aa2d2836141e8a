"""Keras ``fit`` semantics, compiled: one jitted call trains a whole epoch for every seed at once.

* The epoch is a ``lax.scan`` over batches; the training set stays on device as uint8 and each epoch's shuffle
  is a ``jax.random.permutation`` inside the compiled code, so the host only sees one transfer per epoch.
* 55,000 / 32 leaves a last batch of 24. It is padded to 32 and masked: BN statistics, loss and gradient count
  its 24 real rows only — Keras' semantics — with the same compiled step as every other batch.
* Seeds are a ``vmap`` axis: N seeds of one preset are one program, each seed's numbers the same as alone.
* Normalization and augmentation happen in the step too (``train.preprocess``); each step's random crops and flips
  are drawn with the epoch's shuffle, from the seed's key, the epoch and the step, and so is the key of its
  random layers (dropout, ``layer_keys``).
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from normlab import signals
from normlab.errors import CheckpointError
from normlab.nn.models import Model
from normlab.train import checkpoint
from normlab.train.parallel import AXIS, DataParallel, device_rows, one_copy, replicated
from normlab.train.preprocess import LAYER_STREAM, epoch_draws, preprocessing, step_key
from normlab.train.processes import all_compiled
from normlab.train.state import TrainState, create
from normlab.train.step import EVAL_CHUNK, chunked, make_chunk_sums, make_train_step


@dataclass(frozen=True)
class TrainConfig:
    """How ``fit`` trains; the values come from a study (``StudyConfig.train_config``), which has the defaults."""
    learning_rate: float
    batch_size: int
    epochs: int
    optimizer: str                  # sgd | momentum | adam
    optimizer_momentum: float       # for "momentum" (heavy ball, Keras' SGD(momentum=...))
    shuffle: bool = True            # False: every epoch visits the batches in order (``fit(shuffle=False)``)
    devices: int = 1                # > 1: each batch split over that many devices (``train.parallel``)
    bn_sync: bool = True            # ... with batch norm's statistics over the whole batch, else per device
    normalize: str = "none"         # none | per_channel (``train.preprocess``)
    augment: tuple[str, ...] = ()   # of crop4, flip: training batches only

    @property
    def parallel(self) -> DataParallel | None:
        return DataParallel(self.devices, self.bn_sync) if self.devices > 1 else None


OPTIMIZERS = {
    # Keras' SGD(learning_rate=1e-3), the study's optimizer: w <- w - lr * g.
    "sgd": lambda c: optax.sgd(c.learning_rate),
    "momentum": lambda c: optax.sgd(c.learning_rate, momentum=c.optimizer_momentum),
    "adam": lambda c: optax.adam(c.learning_rate),
}


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return OPTIMIZERS[config.optimizer](config)


def batch_mask(num_examples: int, batch_size: int) -> np.ndarray:
    """(steps, batch_size): 1 for the real rows of each batch, 0 for the padding of the last one."""
    steps = -(-num_examples // batch_size)
    return (np.arange(steps * batch_size) < num_examples).astype(np.float32).reshape(steps, batch_size)


def shuffled_batches(rng, epoch_index, num_examples: int, batch_size: int, shuffle: bool = True):
    """The rows of each of the epoch's batches, (steps, batch_size), in the epoch's own shuffle (in order without
    ``shuffle``); padded with row 0."""
    steps = -(-num_examples // batch_size)
    order = (jax.random.permutation(jax.random.fold_in(rng, epoch_index), num_examples) if shuffle
             else jnp.arange(num_examples))
    return jnp.pad(order, (0, steps * batch_size - num_examples)).reshape(steps, batch_size)


def layer_keys(model: Model, rng, epoch_index, steps: int):
    """Each step's key for the model's random layers, (steps,): the seed's key folded with the epoch and the step,
    as the augmentation's, so a resumed run draws what the uninterrupted one did and each seed its own. Every
    device gets the same keys (a random layer's split form draws for the whole batch, then takes its rows). None
    for a model without random layers: its program holds no key work."""
    if not model.is_random():
        return None
    return jax.vmap(lambda step: step_key(rng, epoch_index, step, LAYER_STREAM))(jnp.arange(steps))


def make_epoch(model: Model, optimizer, num_examples: int, batch_size: int, shuffle: bool = True, sgd_rate=None,
               axis_name=None, stats: dict | None = None, augment: tuple[str, ...] = ()):
    """``epoch(ts, images, labels, epoch_index) -> (ts, {"loss", "accuracy"})`` for one seed (``sgd_rate``,
    ``axis_name`` and ``stats``: as in ``make_train_step``; with ``axis_name`` each device trains on its share of
    each batch). ``augment``: every step's draws (``preprocess.epoch_draws``) are made for the whole batch, then
    split with its rows, so a device split changes none of them."""
    mask = batch_mask(num_examples, batch_size)
    step = make_train_step(model, optimizer, sgd_rate, axis_name, stats)

    def epoch(ts: TrainState, images, labels, epoch_index):
        batches = shuffled_batches(ts.rng, epoch_index, num_examples, batch_size, shuffle), jnp.asarray(mask)
        if augment:
            batches += (epoch_draws(ts.rng, epoch_index, len(mask), batch_size, augment),)
        if axis_name is not None:
            batches = device_rows(batches, axis_name)

        def body(ts, batch):
            (rows, batch_mask, *drawn), key = batch
            return step(ts, images[rows], labels[rows], batch_mask, *drawn, key=key)

        keys = layer_keys(model, ts.rng, epoch_index, len(mask))  # not split: every device's are the same
        ts, (loss_sums, correct_sums) = jax.lax.scan(body, ts, (batches, keys))
        return ts, {"loss": jnp.sum(loss_sums) / num_examples, "accuracy": jnp.sum(correct_sums) / num_examples}

    return epoch


def seeds_epoch(model: Model, config: TrainConfig, num_examples: int, donate: bool = False,
                parallel: DataParallel | None = None, stats: dict | None = None):
    """``epoch(ts, images, labels, epoch_index, learning_rate)``, jitted, for the seeds of ``ts`` (vmapped): the
    training program ``fit`` runs (``donate``: ``ts``'s buffers are reused for the result, as ``fit`` does), on
    ``parallel``'s devices, each batch split over them, its arguments replicated there; the images normalized
    with ``stats`` (``preprocess.preprocessing`` of the training images, as ``config.normalize`` asks) and
    augmented as ``config.augment`` asks.

    The learning rate is an argument, not a constant in the program: a sweep's learning rates are then one program,
    compiled once (loaded from the compile cache after the first) rather than once each. Plain SGD on a BLAS GEMM
    steps the kernels inside their weight-gradient products (``make_train_step``'s ``sgd_rate``).
    """
    from normlab.engine import gemm
    # a stepped kernel's "gradient" is the kernel itself: summed over devices it would be N kernels
    folds = config.optimizer == "sgd" and gemm.chosen() != "xla" and parallel is None
    if config.normalize != "none" and (stats is None or stats["mean"] is None):
        raise ValueError(f"normalize {config.normalize!r} needs the training images' statistics (stats)")
    axis_name = None if parallel is None else AXIS
    if parallel is not None:
        model = parallel.model(model)

    def epoch_at(ts, images_u8, labels, epoch_index, learning_rate):
        optimizer = make_optimizer(dataclasses.replace(config, learning_rate=learning_rate))
        return make_epoch(model, optimizer, num_examples, config.batch_size, config.shuffle,
                          learning_rate if folds else None, axis_name, stats,
                          config.augment)(ts, images_u8, labels, epoch_index)

    program = jax.vmap(epoch_at, in_axes=(0, None, None, None, None))
    if parallel is not None:
        program = jax.shard_map(program, mesh=parallel.mesh(), in_specs=PartitionSpec(), out_specs=PartitionSpec())
    return jax.jit(program, donate_argnums=0 if donate else ())


@dataclass
class SeedsResult:
    """Per-seed histories of one preset trained over several seeds in one program."""
    seeds: list[int]
    history: dict[str, np.ndarray]   # metric -> (seeds, epochs); NaN/Inf from a diverged seed's epoch on
    test: dict[str, np.ndarray]      # "loss"/"accuracy" -> (seeds,)
    diverged_epoch: list[int | None]  # per seed: first epoch (1-based) whose training loss was not finite
    compile_s: float
    train_s: float
    final_state: TrainState | None  # None when the seeds trained in another process
    resumed_from: int = 0            # epochs restored from a checkpoint


@dataclass(frozen=True)
class Checkpointing:
    """Where and how ``fit`` checkpoints; ``identity`` is what a resumed run must match (not the epoch count), but
    for its ``unchecked`` keys, which the checkpoint decides (and the checkpoints after it keep). ``cannot_start``
    says why the run cannot start over, if it cannot (its initial weights are gone): then it must resume."""
    directory: Path
    identity: dict
    resume: bool = False
    keep: int = 2
    warn: Callable[[str], None] = print
    unchecked: tuple[str, ...] = ()
    cannot_start: str | None = None


METRICS = checkpoint.METRICS


@dataclass(frozen=True)
class EpochEvent:
    """What ``fit`` tells its ``on_epoch`` hook, per epoch: one value per seed of ``seeds`` for each of ``METRICS``.

    ``stage`` is "trained" (just now, in ``seconds``), "restored" (from a checkpoint on resume, before training
    goes on, so a live log misses no epoch) or, once per program, "test": the test "loss" and "accuracy" after
    its last ``epoch``. ``job`` is the caller's: what the seeds are trained for (``experiments.reproduce.Job``).
    """
    seeds: list[int]
    epoch: int                       # 1-based
    metrics: dict[str, np.ndarray]
    seconds: float = 0.0
    stage: str = "trained"
    job: Any = None


def finite(metrics: dict) -> np.ndarray:
    """Where training and validation loss are both finite: the one rule for a seed that has not diverged."""
    return np.isfinite(np.asarray(metrics["loss"]) + np.asarray(metrics["val_loss"]))


def _first_divergence(history: dict) -> list[int | None]:
    """Per seed, the 1-based epoch of the first non-finite training or validation loss."""
    bad = ~finite({key: np.stack(history[key], axis=1) for key in ("loss", "val_loss")})
    return [int(np.argmax(row)) + 1 if row.any() else None for row in bad]


def fit(model: Model, data, seeds: list[int], config: TrainConfig,
        on_epoch: Callable[[EpochEvent], None] | None = None, checkpointing: Checkpointing | None = None,
        initial: tuple | None = None) -> SeedsResult:
    """Train ``model`` for every seed in ``seeds``, vmapped into one compiled program, and evaluate like
    ``model.fit(..., validation_data=...)``.

    ``on_epoch`` gets an ``EpochEvent`` per epoch, restored or trained, and one with the test metrics at the end.
    Compile time is measured apart from training time (ahead-of-time ``lower().compile()``). With
    ``checkpointing`` the state is saved after every epoch and, if ``resume``, training continues from the newest
    intact checkpoint — bit for bit as if it had never stopped. Training stops early once every seed has diverged
    (non-finite loss). How a study groups its seeds into such programs is ``experiments.reproduce.jobs``' call.
    ``initial`` ``(params, state)`` replaces every seed's initial weights (``--init-from``); seeds still shuffle.
    """
    optimizer, parallel = make_optimizer(config), config.parallel
    if parallel is not None:
        parallel.check(model, config.batch_size)
        mesh = parallel.mesh()  # before anything starts JAX: a CPU may still make its devices
    x_train, y_train, x_val, y_val, x_test, y_test = jax.device_put((
        data.x_train, data.y_train.astype(np.int32), data.x_val, data.y_val.astype(np.int32), data.x_test,
        data.y_test.astype(np.int32)))
    ts = jax.vmap(lambda seed: create(model, optimizer, seed, initial))(jnp.asarray(seeds, jnp.uint32))
    history = {k: [] for k in METRICS}
    first_epoch, train_s_before, found = 0, 0.0, None
    if checkpointing is not None:
        if checkpointing.resume:
            found = checkpoint.latest(checkpointing.directory, checkpointing.identity, checkpoint.max_size(ts),
                                      checkpointing.warn, list(seeds),
                                      checkpointing.unchecked)
        if found is None and checkpointing.cannot_start is not None:
            raise CheckpointError(f"{checkpointing.cannot_start}, and {checkpointing.directory} holds no checkpoint "
                                  f"to resume from")
        done = 0 if found is None else found[1]["epoch"]
        if done > config.epochs:
            raise CheckpointError(f"{checkpointing.directory} already holds {done} epochs, more than the "
                                  f"{config.epochs} asked for; ask for at least {done} epochs or start a new run "
                                  f"directory")
        checkpoint.check_room(checkpointing.directory, range(done + 1, config.epochs + 1))  # before any event
        identity = checkpointing.identity if found is None else found[1]["config"]
    if found is not None:
        saved, record = found
        ts = checkpoint.restore(saved, ts)
        history = {k: [np.asarray(v, np.float64) for v in record["history"][k]] for k in history}
        first_epoch, train_s_before = record["epoch"], record["train_s"]
        for epoch in range(first_epoch):  # replayed, so that a live log of this run misses no epoch
            if on_epoch is not None:
                on_epoch(EpochEvent(list(seeds), epoch + 1, {k: v[epoch] for k, v in history.items()},
                                    stage="restored"))

    learning_rate = jnp.float32(config.learning_rate)
    stats = preprocessing(data.x_train, config.normalize)
    epoch_fn = seeds_epoch(model, config, len(data.y_train), donate=True, parallel=parallel, stats=stats)
    if parallel is not None:  # the training set and the state on every device, once
        ts, x_train, y_train = replicated((ts, x_train, y_train), mesh)
    size = min(EVAL_CHUNK, max(len(y_val), len(y_test)))  # one chunk shape: validation and test share a program
    val_chunks, test_chunks = chunked(x_val, y_val, size), chunked(x_test, y_test, size)
    chunk_fn = jax.jit(jax.vmap(make_chunk_sums(model, stats), in_axes=(0, 0, None, None, None)))
    signals.safe_point("compile")
    start = time.perf_counter()
    train_epoch = epoch_fn.lower(ts, x_train, y_train, jnp.int32(0), learning_rate).compile()
    chunk_sums = chunk_fn.lower(*one_copy((ts.params, ts.model_state)), *(a[0] for a in val_chunks)).compile()
    compile_s = time.perf_counter() - start
    signals.safe_point("compiled")
    all_compiled()  # several processes: none starts the first collective before every one can take part

    def evaluate(params, model_state, chunks):
        """Mean loss and accuracy per seed over every chunk's real rows."""
        sums = [chunk_sums(params, model_state, *(a[i] for a in chunks)) for i in range(len(chunks[0]))]
        count = jnp.sum(chunks[2])
        return tuple(jnp.sum(jnp.stack(parts), axis=0) / count for parts in zip(*sums))

    start = time.perf_counter()
    for epoch in range(first_epoch, config.epochs):
        if history["loss"] and all(_first_divergence(history)):
            break
        signals.safe_point("train")
        epoch_start = time.perf_counter()
        ts, train_metrics = train_epoch(ts, x_train, y_train, jnp.int32(epoch), learning_rate)
        val_loss, val_accuracy = evaluate(*one_copy((ts.params, ts.model_state)), val_chunks)
        metrics = {"loss": train_metrics["loss"], "accuracy": train_metrics["accuracy"],
                   "val_loss": val_loss, "val_accuracy": val_accuracy}
        metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        for k, v in metrics.items():
            history[k].append(v)
        if on_epoch is not None:
            on_epoch(EpochEvent(list(seeds), epoch + 1, metrics, time.perf_counter() - epoch_start))
        if checkpointing is not None:
            record = {"config": identity, "seeds": list(seeds),
                      "history": {k: [v.tolist() for v in vs] for k, vs in history.items()},
                      "train_s": train_s_before + time.perf_counter() - start}
            checkpoint.save(checkpointing.directory, epoch + 1, one_copy(ts), record, checkpointing.keep)
    ts = one_copy(ts)
    test_loss, test_accuracy = evaluate(ts.params, ts.model_state, test_chunks)
    train_s = train_s_before + time.perf_counter() - start
    test = {"loss": np.asarray(test_loss, np.float64), "accuracy": np.asarray(test_accuracy, np.float64)}
    if on_epoch is not None:
        on_epoch(EpochEvent(list(seeds), len(history["loss"]), test, stage="test"))
    stacked = {k: np.stack(v, axis=1) if v else np.zeros((len(seeds), 0)) for k, v in history.items()}
    return SeedsResult(list(seeds), stacked, test,
                       _first_divergence(history) if history["loss"] else [None] * len(seeds),
                       compile_s, train_s, ts, first_epoch)


def merge(parts: list[SeedsResult]) -> SeedsResult:
    """Groups of seeds as one result: seeds in order, times summed (``final_state`` None if a part has none)."""
    states = [p.final_state for p in parts]
    return SeedsResult(
        [s for p in parts for s in p.seeds],
        {k: np.concatenate([p.history[k] for p in parts]) for k in parts[0].history},
        {k: np.concatenate([p.test[k] for p in parts]) for k in parts[0].test},
        [d for p in parts for d in p.diverged_epoch], sum(p.compile_s for p in parts),
        sum(p.train_s for p in parts),
        None if any(s is None for s in states) else jax.tree.map(lambda *a: jnp.concatenate(a), *states),
        min(p.resumed_from for p in parts))
