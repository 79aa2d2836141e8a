"""A trained model out of a run folder (``export``), and any model's test score (``evaluate``)."""

from pathlib import Path

from normlab import signals
from normlab.api.command import option_name, path_of, public
from normlab.errors import ConfigError
from normlab.files import display, one_line
from normlab.interop.command import SUFFIXES


def _format(format: str | None, out: Path | None) -> str:
    by_suffix = {suffix: fmt for fmt, suffix in SUFFIXES.items()}
    if format is None:
        return by_suffix.get(out.suffix, "keras") if out else "keras"
    if format not in SUFFIXES:
        raise ConfigError(f"{option_name('format')} must be one of {', '.join(SUFFIXES)}, got {format!r}")
    if out is not None and out.suffix != SUFFIXES[format]:
        raise ConfigError(f"{option_name('out')} {display(out)}: a {format} file must end in {SUFFIXES[format]}")
    return format


@public
def export(run_dir, *, preset: str | None = None, seed: int | None = None, format: str | None = None,
           fold_bn: bool = False, out=None) -> Path:
    """A finished run's trained model (its last epoch's checkpoint) as a Keras 3 ``.keras``, an ``.onnx`` or a
    ``.safetensors`` file (default RUN_DIR/export/PRESET-seedS[-folded].SUFFIX); ``fold_bn`` folds batch norms
    into the neighbouring Dense/Conv2D (same predictions, fewer layers). The Keras and ONNX models take raw pixels
    (uint8 images, cast to float32 for ONNX): they scale and normalize them as the run did, which its results.json
    records (``interop.preprocessing``); a safetensors file records it in its header. Returns the file's path. An
    existing file is replaced only if normlab exported it, and in a run folder only in its export/ folder
    (``interop.export_target``).

    >>> normlab.export("runs/doc-train", format="safetensors")
    PosixPath('runs/doc-train/export/bn-after-seed0.safetensors')
    """
    from normlab.interop import export_target
    from normlab.interop.model_files import write
    from normlab.interop.preprocessing import of_run
    from normlab.interop.trained import final_weights, one_run
    from normlab.interop.weights import Weights
    from normlab.nn.fold import fold
    out, run_dir = path_of(out, "out"), path_of(run_dir, "run_dir", required=True)
    fmt = _format(format, out)
    config, run = one_run(run_dir, preset, seed)
    preprocessing = of_run(run_dir)
    name = f"{run.preset}-seed{run.seed}{'-folded' if fold_bn else ''}{SUFFIXES[fmt]}"
    if out is None:
        out = run_dir / "export" / name
        export_target.check(out, f"the export {one_line(out)}")
    else:
        export_target.check(out, f"{option_name('out')} {one_line(out)}")
    weights = final_weights(run_dir, config, run)
    if fold_bn:
        weights = Weights(*fold(*weights))
    out.parent.mkdir(parents=True, exist_ok=True)
    signals.safe_point("export")
    write(weights, fmt, out, preprocessing)
    signals.set_note(f"the export was complete: {display(out)}")
    return out


@public
def evaluate(target, *, preset: str | None = None, seed: int | None = None, data=None, data_dir=None,
             verify: bool = True) -> list[dict]:
    """Test loss and accuracy on the test images of a ``.keras`` or ``.safetensors`` model file (on ``data``, the
    default dataset if not given), or of a run folder's models on the data they were trained on (each beside what
    its results.json recorded: the same to a few images, since an image whose two top classes tie to float32
    rounding may go either way in another program or on another CPU).

    >>> [abs(score["accuracy"] - score["recorded"]) < 0.001 for score in normlab.evaluate("runs/doc-train")]
    [True]
    """
    from normlab.api.running import load_data
    from normlab.api.settings import study_config
    target = path_of(target, "target", required=True)
    if target.is_dir():
        from normlab.interop.preprocessing import of_run
        from normlab.interop.trained import final_weights, finished_runs
        config, chosen = finished_runs(target, preset, seed)
        if data is not None:
            raise ConfigError(f"{option_name('data')}: a run folder's models are scored on the data they were "
                              f"trained on ({config.data}); give a model file to score it on other data")
        preprocessing = of_run(target)
        models = [(f"{run.preset} seed {run.seed}", final_weights(target, config, run), run) for run in chosen]
    else:
        if preset is not None or seed is not None:
            raise ConfigError(f"{option_name('preset')} and {option_name('seed')} pick models in a run folder; "
                              "a model file holds one")
        from normlab.interop.model_files import read
        weights, preprocessing = read(target)
        models = [(f"{one_line(target)} ({weights.model.name})", weights, None)]
        config = study_config(None, {"data": data})
    dataset = load_data(config, path_of(data_dir, "data_dir"), verify)
    scores = []
    for label, weights, run in models:
        if weights.model.data != dataset.shape:
            raise ConfigError(f"{label} takes {weights.model.data.image} images in {weights.model.data.classes} "
                              f"classes; {dataset.name}'s are {dataset.shape.image} in {dataset.shape.classes}: give "
                              f"the model's own data with {option_name('data')}")
        signals.safe_point("evaluate")
        loss, accuracy = test_scores(weights, dataset.x_test, dataset.y_test, preprocessing)
        scores.append({"model": label, "loss": loss, "accuracy": accuracy,
                       "recorded": None if run is None or run.test is None else run.test["accuracy"]})
    return scores


def test_scores(weights, images, labels, preprocessing: dict) -> tuple[float, float]:
    """Mean loss and accuracy as training's evaluation computes them (``train.step.make_evaluate``), on the images
    preprocessed as ``preprocessing`` says (a Keras file's Rescaling is not its model's: ``interop.keras_io``)."""
    import jax
    import numpy as np
    from normlab.interop.preprocessing import relative
    from normlab.train.step import make_evaluate
    # what is left to do after the step's own scaling (uint8 pixels / 255): a normalization, or nothing
    stats = relative(preprocessing, 1 / 255 if images.dtype == np.uint8 else 1.0)
    loss, accuracy = jax.jit(make_evaluate(weights.model, stats=stats))(weights.params, weights.state, images,
                                                                        np.asarray(labels, np.int32))
    return float(loss), float(accuracy)
