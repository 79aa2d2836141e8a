"""Residual blocks (``nn.residual``) as data: checked with one-line errors, built into a graph whose forward pass
equals a NumPy float64 reference, nested, and trained."""

import json

import jax
import numpy as np
import pytest

from normlab.data.dataset import Shape
from normlab.cli import main
from normlab.errors import ConfigError
from normlab.nn import models
from normlab.nn.summary import layer_rows, param_counts

DATA = Shape((4, 4, 2), 3)
RELU = {"kind": "activation", "activation": "relu"}


def dense(units, **options):
    return {"kind": "dense", "units": units, **options}


def build(layers, data=DATA):
    return models.build("res", layers, data=data)


def randomized(model, seed=0):
    params, state = models.init(model, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    noisy = lambda tree, low: jax.tree.map(lambda a: np.asarray(a + rng.uniform(low, 1.0, a.shape), np.float32), tree)  # noqa: E731
    return noisy(params, -1.0), noisy(state, 0.1)


def images(n=5, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *DATA.image)).astype(np.float32)


def reference_bn(x, params, state, eps=1e-3):
    return (x - state["moving_mean"]) / np.sqrt(state["moving_variance"].astype(np.float64) + eps) * params[
        "gamma"] + params["beta"]


def test_a_block_computes_activation_of_shortcut_plus_branch_as_numpy_float64():
    layers = [{"kind": "flatten"}, dense(6),
              {"kind": "residual", "layers": [dense(6, use_bias=False), {"kind": "batch_norm"}, RELU, dense(6)]},
              {"kind": "residual", "layers": [dense(4, activation="tanh")], "shortcut": [dense(4)],
               "activation": "linear"},
              dense("classes", activation="softmax")]
    model = build(layers)
    params, state = randomized(model)
    x = images()
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params.items()}
    s = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in state.items()}
    h = x.reshape(len(x), -1).astype(np.float64) @ p["dense"]["kernel"] + p["dense"]["bias"]
    branch = np.maximum(reference_bn(h @ p["dense_1"]["kernel"], p["batch_normalization"],
                                     s["batch_normalization"]), 0) @ p["dense_2"]["kernel"] + p["dense_2"]["bias"]
    h = np.maximum(h + branch, 0)
    h = (h @ p["dense_4"]["kernel"] + p["dense_4"]["bias"]) + np.tanh(h @ p["dense_3"]["kernel"] + p["dense_3"]["bias"])
    want = h @ p["dense_5"]["kernel"] + p["dense_5"]["bias"]
    got, _ = models.apply(model, params, state, x, False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    names = [name for name, _ in model.layers]
    assert names == ["flatten", "dense", "dense_1", "batch_normalization", "activation", "dense_2", "add",
                     "activation_1", "dense_3", "dense_4", "add_1", "dense_5"]
    assert not model.is_sequential() and build([{"kind": "flatten"}, dense(3)]).is_sequential()


def test_blocks_nest_and_count_their_layers_parameters():
    inner = {"kind": "residual", "layers": [dense(8), RELU]}
    model = build([{"kind": "flatten"}, dense(8), {"kind": "residual", "layers": [inner, dense(8)]},
                   dense("classes")])
    assert param_counts(model)["total"] == (32 * 8 + 8) + 2 * (8 * 8 + 8) + (8 * 3 + 3)
    assert [row.name for row in layer_rows(model)].count("add_1") == 1
    x = images()
    params, state = randomized(model)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = x.reshape(len(x), -1) @ p["dense"]["kernel"] + p["dense"]["bias"]
    inner_out = np.maximum(h + np.maximum(h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], 0), 0)
    h = np.maximum(h + inner_out @ p["dense_2"]["kernel"] + p["dense_2"]["bias"], 0)
    np.testing.assert_allclose(models.apply(model, params, state, x, False)[0],
                               h @ p["dense_3"]["kernel"] + p["dense_3"]["bias"], rtol=1e-5, atol=1e-5)


def test_a_shortcut_whose_shape_differs_from_its_branch_says_both_shapes():
    with pytest.raises(ConfigError) as error:
        build([{"kind": "flatten"}, {"kind": "residual", "layers": [dense(5)]}, dense(3)])
    assert "(32,)" in str(error.value) and "(5,)" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("block, words", [
    ({"kind": "residual"}, "needs layers"),
    ({"kind": "residual", "layers": []}, "list of 1 to"),
    ({"kind": "residual", "layers": [dense(32)], "shortcut": "none"}, "shortcut"),
    ({"kind": "residual", "layers": [dense(32)], "merge": "concat"}, "merge must be one of 'add'"),
    ({"kind": "residual", "layers": [dense(32)], "activation": "rleu"}, "activation must be one of"),
    ({"kind": "residual", "layers": [dense(32)], "layer": []}, "did you mean 'layers'"),
    ({"kind": "residual", "layers": [{"kind": "dense"}]}, "needs units"),
    ({"kind": "add"}, "joins a block's branches"),
    ({"kind": "residul"}, "did you mean 'residual'"),
])
def test_a_bad_block_is_one_line(block, words):
    with pytest.raises(ConfigError, match=words) as error:
        build([{"kind": "flatten"}, block, dense(3)])
    assert "\n" not in str(error.value)


def test_nesting_and_size_are_bounded():
    block = dense(4)
    for _ in range(9):
        block = {"kind": "residual", "layers": [block]}
    with pytest.raises(ConfigError, match="nest at most 8"):
        build([{"kind": "flatten"}, dense(4), block, dense(3)])
    wide = {"kind": "residual", "layers": [dense(4)] * 100}
    with pytest.raises(ConfigError, match="more than 2,000"):
        build([{"kind": "flatten"}, dense(4), *[wide] * 21, dense(3)])


RESIDUAL_STUDY = """
[config]
epochs = 1
subset = 64
batch_size = 16
presets = ["res"]

[models.res]
layers = [
  {kind = "flatten"}, {kind = "dense", units = 16},
  {kind = "residual", layers = [{kind = "dense", units = 16, use_bias = false}, {kind = "batch_norm"},
                                {kind = "activation", activation = "relu"}, {kind = "dense", units = 16}]},
  {kind = "dense", units = "classes", activation = "softmax"},
]
"""


def test_a_study_file_writes_blocks_in_toml_and_trains_them(tmp_path, data_dir):
    """Blocks written in TOML, summarized and trained for an epoch through the CLI users run."""
    study = tmp_path / "res.toml"
    study.write_text(RESIDUAL_STUDY)
    assert main(["summary", "res", "--study", str(study)]) == 0
    code = main(["train", "res", "--study", str(study), "--data-dir", str(data_dir), "--no-verify",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    history = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]
    assert history and all(np.isfinite(run["history"]["loss"]).all() for run in history)


def test_diagnose_measures_a_residual_model(tmp_path, data_dir):
    """Diagnose's probes read the graph: the input of the last hidden nonlinearity is the block's sum."""
    study = tmp_path / "res.toml"
    study.write_text(RESIDUAL_STUDY)
    assert main(["diagnose", "--presets", "res", "--study", str(study), "--seeds", "1", "--data-dir", str(data_dir),
                 "--no-verify", "--out", str(tmp_path / "d")]) == 0
    diagnostics = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert diagnostics["presets"]["res"]["percentiles"]["layer"] == "activation_1"


def test_the_readme_s_residual_model_is_valid_toml_counted_as_keras_counts_it():
    """The README's example, parsed as a user copies it, against the same network written in Keras."""
    import re
    import tomllib
    from pathlib import Path
    from normlab.interop.keras_io import load_keras
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```toml\n(\[models\.tiny-resnet\].*?)```", readme, re.S).group(1)
    model = models.build("tiny-resnet", tomllib.loads(block)["models"]["tiny-resnet"]["layers"])
    keras = load_keras()
    layers = keras.layers
    inputs = keras.Input((28, 28))
    x = layers.Activation("relu")(layers.BatchNormalization()(
        layers.Conv2D(16, 3, padding="same")(layers.Reshape((28, 28, 1))(inputs))))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x)))
    x = layers.Activation("relu")(layers.add([x, layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(y))]))
    y = layers.BatchNormalization()(layers.Conv2D(32, 3, strides=2, padding="same")(x))
    x = layers.Activation("relu")(layers.add([layers.Conv2D(32, 1, strides=2)(x), y]))
    theirs = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    non_trainable = sum(int(np.prod(w.shape)) for w in theirs.non_trainable_weights)
    assert param_counts(model) == {"total": theirs.count_params(), "trainable": theirs.count_params() - non_trainable,
                                   "non_trainable": non_trainable}


def test_repeated_lists_are_refused_before_they_are_checked():
    """``[block] * 100`` eight deep names 100**8 tables: counted up to the limit, not checked one by one."""
    block = dense(4)
    for _ in range(8):
        block = {"kind": "residual", "layers": [block] * 100}
    with pytest.raises(ConfigError, match="more than 2,000 layers"):
        build([{"kind": "flatten"}, dense(4), block, dense(3)])
