"""Bench child for Keras 3 (``--backend tensorflow`` or ``jax``): the model as a Sequential (``mirror``), ``fit``.

Epochs are timed by a callback from ``on_epoch_begin`` to
``on_epoch_end``, so validation counts as in normlab. With the JAX backend several ``steps_per_execution``
settings are tried for 2 epochs each; the best then runs the measured epochs. With ``--jobs`` the child trains
the study's (preset, seed) jobs in turn instead, a fresh model and ``fit`` each; ``--core`` pins it to one core,
single-threaded, as one of the JAX study's workers (one per core, like normlab's).
"""

import os
import time

from normlab.bench.common import child_parser, load_arrays, read_model, summarize, write_result
from normlab.interop.mirror import Unsupported, keras_model

SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def train(keras, job: dict, arrays, epochs: int, steps_per_execution: int = 1, seed: int = 0) -> dict:
    x_train, y_train, x_val, y_val = arrays
    keras.utils.set_random_seed(seed)
    model = keras_model(keras, job["description"])
    optimizer = keras.optimizers.SGD(learning_rate=job["config"]["learning_rate"])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer,
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    history = model.fit(x_train, y_train, epochs=epochs, batch_size=job["config"]["batch_size"], shuffle=True,
                        validation_data=(x_val, y_val), verbose=0, callbacks=[EpochTimer()])
    return summarize(times, len(y_train)) | {
        "val_accuracy": float(history.history["val_accuracy"][-1]), "params": int(model.count_params()),
        "steps_per_execution": steps_per_execution, "jit_compile": bool(model.jit_compile)}


def pin(core: int) -> None:
    """One core and one thread, set before the framework starts (it sizes its thread pools then), as the JAX
    study's worker on its own core: more threads than cores would only take turns on it."""
    os.sched_setaffinity(0, {core})
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), SINGLE_THREAD_XLA_FLAGS]))
    os.environ["OMP_NUM_THREADS"] = "1"


def run_jobs(keras, args, arrays, steps_per_execution: int) -> dict:
    """The study's way: a fresh model and ``fit`` per job, one after another, timed together."""
    start, runs = time.perf_counter(), []
    for preset, seed in (item.split(":") for item in args.jobs.split(",")):
        run = train(keras, read_model(args, preset), arrays, args.epochs, steps_per_execution, int(seed))
        runs.append({"preset": preset, "seed": int(seed), **{k: run[k] for k in ("val_accuracy", "epoch_times_s")}})
    return {"total_s": time.perf_counter() - start, "epochs": args.epochs, "jobs": runs, "core": args.core,
            "steps_per_execution": steps_per_execution}


def main(argv=None) -> None:
    parser = child_parser(__doc__)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), required=True)
    parser.add_argument("--spe", default="1",
                        help="steps_per_execution values to try, comma-separated (with --jobs: the one to use)")
    parser.add_argument("--jobs", help="the study's way instead: PRESET:SEED,... a fresh model and fit each, in "
                                       "turn, timed together; each preset's model is read from --model's folder")
    parser.add_argument("--core", type=int, help="pin this process to this core, single-threaded")
    args = parser.parse_args(argv)
    if args.core is not None:
        pin(args.core)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    job = read_model(args)
    try:
        keras_model(keras, job["description"])
    except Unsupported as error:  # a layer Keras has no class for: the peer sits this model out
        write_result(args.out, {"skipped": str(error)})
        return
    _, x_train, y_train, x_val, y_val = load_arrays(args)
    arrays = (x_train.astype("float32") / 255, y_train, x_val.astype("float32") / 255, y_val)
    settings = [int(s) for s in args.spe.split(",")]
    if args.jobs:
        write_result(args.out, run_jobs(keras, args, arrays, settings[0]) | {"backend": args.backend})
        return
    trials = {}
    if len(settings) > 1:  # 2 epochs each: epoch 2 is the first steady one
        trials = {s: train(keras, job, arrays, 2, s) for s in settings}
        settings = [min(trials, key=lambda s: trials[s]["epoch_s"])]
    result = train(keras, job, arrays, args.epochs, settings[0])
    backend = __import__(args.backend)
    result |= {"backend": args.backend, "versions": {"keras": keras.__version__, args.backend: backend.__version__},
               "spe_trials": {str(s): {k: t[k] for k in ("epoch_times_s", "epoch_s", "val_accuracy")}
                              for s, t in trials.items()}}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
