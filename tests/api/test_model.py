"""``normlab.model`` and ``normlab.Model`` without training: built from layer tables as a study's ``[models.NAME]``
is, given the weights training draws (``init``), and predicting what a NumPy float64 forward pass of those weights
computes; every mistake a one-line error."""

import numpy as np
import pytest

import normlab
from normlab.errors import ConfigError

SMALL = [{"kind": "flatten"}, {"kind": "dense", "units": 32, "activation": "relu"}, {"kind": "batch_norm"},
         {"kind": "dense", "units": "classes", "activation": "softmax"}]


def numpy_forward(model: normlab.Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities of ``pixels`` (float64, already preprocessed) through SMALL's layers in float64, in
    inference mode (batch norm with its moving statistics, Keras' epsilon), from ``model.weights`` alone."""
    w = {name: np.asarray(array, np.float64) for name, array, _ in model.weights}
    epsilon = model.spec[2]["epsilon"]
    x = pixels.reshape(len(pixels), -1)
    x = np.maximum(x @ w["dense/kernel"] + w["dense/bias"], 0)
    x = ((x - w["batch_normalization/moving_mean"]) / np.sqrt(w["batch_normalization/moving_variance"] + epsilon)
         * w["batch_normalization/gamma"] + w["batch_normalization/beta"])
    logits = x @ w["dense_1/kernel"] + w["dense_1/bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def images(n: int, shape=(28, 28), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.uint8)


def test_predict_of_a_dense_model_is_a_numpy_float64_forward_pass_of_its_weights():
    model = normlab.model(SMALL, name="small").init(seed=1)
    x = images(20)
    expected = numpy_forward(model, x / 255.0)
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.predict(x, batch_size=7), expected, atol=1e-5, rtol=0)  # a padded last batch
    np.testing.assert_allclose(model(x[3]), expected[3], atol=1e-5, rtol=0)  # one image: one row of probabilities
    # a fresh model takes pixels as training's step does: uint8 / 255, float pixels as they are
    np.testing.assert_allclose(model.predict(x.astype(np.float64) / 255), expected, atol=1e-5, rtol=0)


def test_weights_are_keras_ordered_paths_arrays_and_trainable_flags():
    model = normlab.model(SMALL, name="small")
    weights = model.init(seed=0).weights
    assert [name for name, _, _ in weights] == [v.path for v in model.variables()]
    assert [(name, array.shape, trainable) for name, array, trainable in weights][2:6] == [
        ("batch_normalization/gamma", (32,), True), ("batch_normalization/beta", (32,), True),
        ("batch_normalization/moving_mean", (32,), False), ("batch_normalization/moving_variance", (32,), False)]


def test_init_is_a_pure_function_of_the_seed():
    model = normlab.model(SMALL, name="small")
    kernel = lambda seed: model.init(seed=seed).weights[0][1]  # noqa: E731
    np.testing.assert_array_equal(kernel(3), kernel(3))
    assert not np.array_equal(kernel(3), kernel(4))


def test_layers_score_the_datas_classes_and_a_first_list_argument_is_layers():
    wide = normlab.model(layers=SMALL, name="small", data="cifar100")
    assert [v.shape for v in wide.variables()][-2:] == [(32, 100), (100,)]
    assert wide.spec[-1]["units"] == 100
    assert normlab.model(SMALL).name == "model"


def test_a_preset_by_name_keeps_working_and_can_be_renamed():
    assert normlab.model("bn-after").name == normlab.model(name="bn-after").name == "bn-after"
    renamed = normlab.model("bn-after", name="mine")
    assert renamed.name == "mine" and renamed.spec == normlab.model("bn-after").spec


def test_a_model_renamed_keeps_its_layers_weights_and_predictions():
    folded = normlab.model("bn-after").init(seed=2).folded()  # a bn-after no more: it needs a name of its own
    renamed = normlab.model(folded, name="bn-after-folded")
    assert normlab.model(folded) is folded and renamed.name == "bn-after-folded" and renamed.spec == folded.spec
    np.testing.assert_array_equal(renamed.predict(images(5)), folded.predict(images(5)))
    assert normlab.config(presets=[renamed]).presets == ("bn-after-folded",)


def test_config_takes_models_that_presets_name():
    config = normlab.config(presets=["linear", "baseline"],
                            models={"linear": {"layers": [{"kind": "flatten"}, {"kind": "dense", "units": "classes"}]}})
    assert config.presets == ("linear", "baseline") and config.model("linear").spec[-1]["units"] == 10
    linear = normlab.model([{"kind": "flatten"}, {"kind": "dense", "units": "classes"}], name="linear")
    assert normlab.config(presets=[linear, "baseline"]).models == config.models
    assert normlab.config(presets=[normlab.model("baseline")]).models == {}  # a preset stays a preset


@pytest.mark.parametrize("call, fragment", [
    (lambda: normlab.model(5), "a model is a preset's or study model's name, a model file's path"),
    (lambda: normlab.model(None), "a model is a preset's or study model's name"),
    (lambda: normlab.model({"layers": []}), "a list of layer tables or a normlab.Model, got {'layers': []}"),
    (lambda: normlab.model("bn-afterr"), "did you mean 'bn-after'"),
    (lambda: normlab.model([{"kind": "dense", "units": "x"}], name="m"), "layers: [models.m] layer 1 (dense): units"),
    (lambda: normlab.model([], name="m"), "layers must be a list of 1 to 100 layer tables"),
    (lambda: normlab.model([{"kind": "flatten"}, {"kind": "dense", "units": 3}], name="m"), "needs 10 class scores"),
    (lambda: normlab.model(SMALL, name="bn-after"), "bn-after is a built-in preset"),
    (lambda: normlab.model(SMALL, name="a/b"), "name: a model name must be a folder name"),
    (lambda: normlab.model(SMALL, layers=SMALL), "give a model's layers once"),
    (lambda: normlab.model("missing.keras"), "missing.keras: no such file"),
    (lambda: normlab.model("missing.onnx"), "normlab reads .keras and .safetensors"),
    (lambda: normlab.model("m.safetensors", data="cifar10"), "a model file holds its model for its own images"),
    (lambda: normlab.config(models={"m": {"layers": SMALL, "x": 1}}), "models: [models.m] must hold exactly one"),
    (lambda: normlab.config(presets=[normlab.model(SMALL, name="m"), normlab.model(SMALL[:1] + SMALL[3:], name="m")]),
     "two models are named m"),
    (lambda: normlab.config(presets=[normlab.model("bn-before").folded()]),
     "presets: model bn-before does not fit model bn-before: its layer 2 is dense"),
    (lambda: normlab.model(SMALL, name="small").predict(images(2)), "model small has no weights to predict with"),
    (lambda: normlab.model(SMALL, name="small").weights, "model small has no weights to list: draw them with .init(seed)"),
    (lambda: normlab.model(SMALL, name="small").init(seed=-1), "seed must be an int in 0..4294967295"),
    (lambda: normlab.model(SMALL, name="small").init(seed=1.0), "seed must be an int"),
])
def test_a_mistake_is_a_one_line_error(call, fragment):
    with pytest.raises(ConfigError) as error:
        call()
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("x, fragment", [
    (images(2, (28, 27)), "x must be images of shape (28, 28) (a batch (N, 28, 28), or one), got shape (2, 28, 27)"),
    (images(2, (28, 28, 1)), "got shape (2, 28, 28, 1)"),
    (np.zeros((0, 28, 28), np.uint8), "x holds no image"),
    (np.full((1, 28, 28), np.nan), "not finite"),
    (np.full((1, 28, 28), np.inf, np.float32), "not finite"),
    (np.full((1, 28, 28), 1e300), "not finite"),  # beyond float32
    (np.zeros((1, 28, 28), np.int64), "uint8 or float array, got ndarray of dtype int64"),
    (np.zeros((1, 28, 28), bool), "dtype bool"),
    ("pixels", "got str of dtype <U6"),
    ([[1, 2], [3]], "got list of dtype object"),
])
def test_bad_pixels_are_a_one_line_error(x, fragment):
    model = normlab.model(SMALL, name="small").init(seed=0)
    with pytest.raises(ConfigError) as error:
        model.predict(x)
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_a_bad_batch_size_is_a_one_line_error(batch_size):
    with pytest.raises(ConfigError, match="batch_size must be a positive int"):
        normlab.model(SMALL, name="small").init(seed=0).predict(images(2), batch_size=batch_size)
