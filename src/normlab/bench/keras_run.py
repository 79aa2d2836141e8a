"""Bench child for Keras 3 (``--backend tensorflow`` or ``jax``): the model as a Sequential (``mirror``), ``fit``.

Epochs are timed by a callback from ``on_epoch_begin`` to
``on_epoch_end``, so validation counts as in normlab. With the JAX backend several ``steps_per_execution``
settings are tried for 2 epochs each; the best then runs the measured epochs.
"""

import os
import time

from normlab.bench.common import child_parser, load_arrays, read_model, summarize, write_result
from normlab.interop.mirror import Unsupported, keras_model


def train(keras, args, arrays, epochs: int, steps_per_execution: int = 1, seed: int = 0) -> dict:
    x_train, y_train, x_val, y_val = arrays
    keras.utils.set_random_seed(seed)
    job = read_model(args)
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


def main(argv=None) -> None:
    parser = child_parser(__doc__)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), required=True)
    parser.add_argument("--spe", default="1", help="steps_per_execution values to try, comma-separated")
    parser.add_argument("--seeds", type=int, help="the study's way instead: a fresh model and fit per seed, timed")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    try:
        keras_model(keras, read_model(args)["description"])
    except Unsupported as error:  # a layer Keras has no class for: the peer sits this model out
        write_result(args.out, {"skipped": str(error)})
        return
    _, x_train, y_train, x_val, y_val = load_arrays(args)
    arrays = (x_train.astype("float32") / 255, y_train, x_val.astype("float32") / 255, y_val)
    if args.seeds:
        start = time.perf_counter()
        runs = [train(keras, args, arrays, args.epochs, seed=seed) for seed in range(args.seeds)]
        write_result(args.out, {"total_s": time.perf_counter() - start, "seeds": args.seeds, "epochs": args.epochs,
                                "val_accuracy": [r["val_accuracy"] for r in runs],
                                "epoch_s": [r["epoch_s"] for r in runs], "backend": args.backend})
        return
    settings = [int(s) for s in args.spe.split(",")]
    trials = {}
    if len(settings) > 1:  # 2 epochs each: epoch 2 is the first steady one
        trials = {s: train(keras, args, arrays, 2, s) for s in settings}
        settings = [min(trials, key=lambda s: trials[s]["epoch_s"])]
    result = train(keras, args, arrays, args.epochs, settings[0])
    backend = __import__(args.backend)
    result |= {"backend": args.backend, "versions": {"keras": keras.__version__, args.backend: backend.__version__},
               "spe_trials": {str(s): {k: t[k] for k in ("epoch_times_s", "epoch_s", "val_accuracy")}
                              for s, t in trials.items()}}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
