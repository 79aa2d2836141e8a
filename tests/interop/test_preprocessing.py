"""An exported model carries its preprocessing: a .keras file takes raw pixels in plain Keras, reads back as the
same model and preprocessing, and a safetensors header records it; what a user's file can get wrong is one line.

The reference is NumPy float64, (x * scale - mean) / std per channel, computed here; the model is small (a conv
over 8x8 RGB, a dense over 8x8 grayscale) so that each test builds and saves it in a few seconds.
"""

import json

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import normlab
from agreement import NEAR_TIE, top2_gap
from normlab.cli import main
from normlab.data.dataset import Dataset, Shape
from normlab.errors import ConfigError
from normlab.interop.keras_io import load_keras, read_keras, write_keras
from normlab.interop.preprocessing import UINT8, checked, of_run, relative
from normlab.interop.safetensors_io import read_safetensors, write_safetensors
from normlab.interop.weights import Weights, fitted
from normlab.nn import models
from normlab.report.results_json import HISTORY_KEYS

try:
    keras = load_keras()
except ConfigError as error:
    pytest.skip(str(error), allow_module_level=True)

RGB = {"scale": 1 / 255, "mean": [0.25, 0.5, 0.75], "std": [0.125, 0.3, 2.0]}
GREY = {"scale": 1 / 255, "mean": [0.3], "std": [0.2]}
TOLERANCE = 1e-5  # probabilities: float32 rounding of the same sums in two programs


def small(image: tuple) -> Weights:
    layers = [{"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "softmax"}]
    if len(image) == 3:
        layers = [{"kind": "conv2d", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1]}, {"kind": "batch_norm"},
                  *layers]
    model = models.build("small", layers, data=Shape(image, 10))
    return Weights(model, *models.init(model, jax.random.key(0)))


def reference(pixels, preprocessing) -> np.ndarray:
    x = pixels.astype(np.float64) * preprocessing["scale"]
    if preprocessing["mean"] is not None:
        x = (x - np.asarray(preprocessing["mean"])) / np.asarray(preprocessing["std"])
    return x.astype(np.float32)


def probabilities(weights: Weights, x) -> np.ndarray:
    return np.asarray(jax.nn.softmax(models.apply(weights.model, weights.params, weights.state, x, False)[0]))


def pixels(image: tuple, rows: int = 64) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (rows, *image)).astype(np.uint8)


@pytest.mark.parametrize("image, preprocessing", [((8, 8, 3), RGB), ((8, 8), GREY), ((8, 8), UINT8)])
def test_a_keras_file_takes_raw_pixels_and_reads_back_as_the_same_model(image, preprocessing, tmp_path):
    weights, path = small(image), tmp_path / "m.keras"
    write_keras(weights, path, preprocessing)
    loaded = keras.saving.load_model(path)
    raw = pixels(image)
    expected = probabilities(weights, reference(raw, preprocessing))
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=0, atol=TOLERANCE)
    assert np.abs(loaded.predict(raw / 255, verbose=0) - expected).max() > 0.01  # it scales the pixels itself
    back, read = read_keras(path)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, fitted(back, weights.model, "m.keras"),
                                            (weights.params, weights.state))))
    assert read["scale"] == preprocessing["scale"] and (read["mean"] is None) == (preprocessing["mean"] is None)
    for key in ("mean", "std"):  # Keras keeps them in float32
        np.testing.assert_allclose(read[key] or 0, preprocessing[key] or 0, rtol=1e-7)


def test_a_keras_file_without_preprocessing_layers_takes_pixels_over_255(tmp_path):
    """What normlab's exports were before they took raw pixels, and a user's model that expects pixels / 255."""
    path = tmp_path / "old.keras"
    inner = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    inner.save(path)
    weights, preprocessing = read_keras(path)
    assert preprocessing == UINT8
    raw = pixels((8, 8))
    np.testing.assert_allclose(probabilities(weights, reference(raw, UINT8)), inner.predict(raw / 255, verbose=0),
                               rtol=0, atol=TOLERANCE)


def test_a_users_rescaling_with_an_offset_is_a_mean(tmp_path):
    """x / 127.5 - 1, the usual [-1, 1] scaling, is (x / 127.5 - 1) / 1; the probe checked the reading."""
    path = tmp_path / "user.keras"
    keras.Sequential([keras.Input((8, 8)), keras.layers.Rescaling(1 / 127.5, offset=-1.0), keras.layers.Flatten(),
                      keras.layers.Dense(10, "softmax")]).save(path)
    assert read_keras(path)[1] == {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]}


def test_a_safetensors_header_records_the_preprocessing_and_an_old_one_means_pixels_over_255(tmp_path):
    weights = small((8, 8, 3))
    write_safetensors(weights, tmp_path / "new.safetensors", RGB)
    assert read_safetensors(tmp_path / "new.safetensors")[1] == RGB
    write_safetensors(weights, tmp_path / "default.safetensors")
    assert read_safetensors(tmp_path / "default.safetensors")[1] == UINT8
    metadata = safetensors.safe_open(tmp_path / "new.safetensors", "np").metadata()
    del metadata["preprocessing"]  # a file written before the header recorded it
    arrays = safetensors.numpy.load((tmp_path / "new.safetensors").read_bytes())
    (tmp_path / "old.safetensors").write_bytes(safetensors.numpy.save(arrays, metadata))
    assert read_safetensors(tmp_path / "old.safetensors")[1] == UINT8


def test_relative_is_the_same_map_on_pixels_the_step_scaled():
    raw = pixels((8, 8, 3)).astype(np.float64)
    for preprocessing in (RGB, UINT8, {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]}, {"scale": 1.0}):
        stats = relative(checked(preprocessing, "test"), 1 / 255)
        if stats["mean"] is None:
            assert preprocessing["scale"] == 1 / 255 and preprocessing.get("mean") is None
            continue
        np.testing.assert_allclose((raw / 255 - np.asarray(stats["mean"])) / np.asarray(stats["std"]),
                                   reference(raw, checked(preprocessing, "test")), rtol=1e-6, atol=1e-6)


def test_of_run_reads_results_json_and_defaults_to_pixels_over_255(tmp_path):
    run = {"preset": "baseline", "seed": 0, "history": {key: [0.5] for key in HISTORY_KEYS},
           "test": {"loss": 0.5, "accuracy": 0.5}}
    results = {"config": {}, "runs": [run]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert of_run(tmp_path) == UINT8
    colour = Dataset(np.zeros((20, 4, 4, 3), np.uint8), np.arange(20) % 2, np.zeros((2, 4, 4, 3), np.uint8), [0, 1],
                     val_split=2)
    results |= {"data": colour.provenance() | {"subset": None}}
    (tmp_path / "results.json").write_text(json.dumps(results | {"preprocessing": RGB}))
    assert of_run(tmp_path) == RGB
    (tmp_path / "results.json").write_text(json.dumps(results | {"preprocessing": {"scale": 0}}))
    with pytest.raises(ConfigError, match="results.json: has a 'preprocessing' without a positive 'scale'"):
        of_run(tmp_path)


def keras_file(path, *head, image=(8, 8)):
    keras.Sequential([keras.Input(image), *head, keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]).save(path)


@pytest.mark.parametrize("head, message", [
    (lambda: [keras.layers.Rescaling(float("nan"))], "the preprocessing's scale must be a finite number other than "
                                                     "0, got nan"),
    (lambda: [keras.layers.Rescaling(1.0, offset=float("inf"))], "mean and std must be lists of 1 finite numbers"),
    (lambda: [keras.layers.Rescaling(np.array([1.0, 2.0]))], "its Rescaling's scale must be one number"),
    (lambda: [keras.layers.Normalization(axis=None, mean=0.5, variance=0.25, invert=True)], "inverts (invert=True)"),
    (lambda: [keras.layers.Normalization(axis=-1, mean=[0.5] * 8, variance=[0.25] * 8)],
     "its Normalization is not per channel (its mean has shape (1, 1, 8))"),
    (lambda: [keras.layers.Normalization(axis=None, mean=0.5, variance=0.0)], "std's positive"),
    (lambda: [keras.layers.Normalization(axis=None, mean=0.5, variance=1.0), keras.layers.Rescaling(2.0)],
     "its first layers are Normalization then Rescaling; normlab reads"),
])
def test_a_bad_preprocessing_in_a_keras_file_is_a_one_line_error(head, message, tmp_path, capsys):
    path = tmp_path / "bad.keras"
    keras_file(path, *head())
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("preprocessing, message", [
    ({"scale": float("inf")}, "scale must be a finite number other than 0, got inf"),
    ({"scale": 1.0, "mean": [0.0, 0.0], "std": [1.0, 1.0]}, "must be lists of 3 finite numbers"),
    ({"scale": 1.0, "mean": [0.0] * 3}, "must be lists of 3 finite numbers"),
    ({"scale": 1.0, "mean": [0.0] * 3, "std": [1.0, 0.0, 1.0]}, "std's positive"),
    ({"scale": 1.0, "offset": 2}, "must be a dict of scale, mean and std"),
    ([1 / 255], "must be a dict of scale, mean and std"),
])
def test_a_bad_preprocessing_is_refused_before_any_file_is_written(preprocessing, message, tmp_path):
    weights = small((8, 8, 3))
    for write in (write_keras, write_safetensors):
        with pytest.raises(ConfigError) as refused:
            write(weights, tmp_path / "m", preprocessing)
        assert str(refused.value).startswith(("safetensors export: ", ".keras export: ")) and message in str(
            refused.value), refused.value
    assert not list(tmp_path.iterdir())


@pytest.mark.full_data
def test_evaluating_a_normalized_model_file_normalizes_the_test_images(real_data, tmp_path):
    """A file whose model takes (pixels / 255 - mean) / std is scored on the test images so normalized: the count of
    correct images is that of its predictions on images normalized here in NumPy float64, up to near ties."""
    weights = small((28, 28))
    normalized, plain = tmp_path / "normalized.safetensors", tmp_path / "plain.safetensors"
    write_safetensors(weights, normalized, GREY)
    write_safetensors(weights, plain, UINT8)
    [score], [unnormalized] = normlab.evaluate(normalized), normlab.evaluate(plain)
    x = (real_data.x_test / 255.0 - GREY["mean"][0]) / GREY["std"][0]
    logits, _ = models.apply(weights.model, weights.params, weights.state, x.astype(np.float32), False)
    probabilities = np.asarray(jax.nn.softmax(logits))
    correct = int((probabilities.argmax(1) == real_data.y_test).sum())
    near_ties = int((top2_gap(probabilities) < NEAR_TIE).sum())
    assert abs(round(score["accuracy"] * len(x)) - correct) <= near_ties, (score, correct, near_ties)
    assert unnormalized["accuracy"] != score["accuracy"]  # the normalization is applied, not skipped
