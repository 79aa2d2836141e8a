"""The ResNet presets against Keras' own CIFAR-10 ResNet v1 example (keras-team/keras ``examples/cifar10_resnet.py``,
``resnet_v1``), its code written out below with ``keras.layers`` on the JAX backend: the same layers in the same
order under the same names, the same variables, the same parameter counts, at depths 20 and 56. Then what each
variant changes, the generator's depths, presets as TOML data, their ONNX export, and the built-in study
``resnets``: it loads, says in one line that CIFAR-10 is missing here, and its four models each train a short epoch
on CIFAR-shaped images with a finite loss."""

import json

import jax
import numpy as np
import pytest

import peers
from clitools import normlab, one_line_error
from conftest import preset_data
from normlab.data.dataset import Shape
from normlab.errors import ConfigError
from normlab.experiments.study import builtin
from normlab.nn import resnets
from normlab.nn.models import build, init, preset, presets
from normlab.nn.summary import layer_rows, param_counts, variables

CIFAR10 = Shape((32, 32, 3), 10)


def keras_resnet_v1(keras, input_shape, depth, num_classes=10):
    """Keras' example: ``resnet_layer`` (conv-BN-activation, each optional) and ``resnet_v1`` as it writes them."""
    from keras.layers import Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten, Input
    from keras.regularizers import l2

    def resnet_layer(inputs, num_filters=16, kernel_size=3, strides=1, activation="relu", batch_normalization=True):
        x = Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding="same",
                   kernel_initializer="he_normal", kernel_regularizer=l2(1e-4))(inputs)
        if batch_normalization:
            x = BatchNormalization()(x)
        if activation is not None:
            x = Activation(activation)(x)
        return x

    num_filters, num_res_blocks = 16, int((depth - 2) / 6)
    inputs = Input(shape=input_shape)
    x = resnet_layer(inputs=inputs)
    for stack in range(3):
        for res_block in range(num_res_blocks):
            strides = 2 if stack > 0 and res_block == 0 else 1  # first layer but not first stack: downsample
            y = resnet_layer(inputs=x, num_filters=num_filters, strides=strides)
            y = resnet_layer(inputs=y, num_filters=num_filters, activation=None)
            if stack > 0 and res_block == 0:  # linear projection shortcut to match the changed dims
                x = resnet_layer(inputs=x, num_filters=num_filters, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False)
            x = keras.layers.add([x, y])
            x = Activation("relu")(x)
        num_filters *= 2
    x = AveragePooling2D(pool_size=8)(x)  # v1 has no BN after the last shortcut connection-ReLU
    y = Flatten()(x)
    outputs = Dense(num_classes, activation="softmax", kernel_initializer="he_normal")(y)
    return keras.models.Model(inputs=inputs, outputs=outputs)


@pytest.mark.parametrize("depth", [20, 56])
def test_the_preset_is_keras_own_example(depth):
    """Layers and variables by name: Keras names them in the order the example creates them, as normlab does, but
    lists them (``model.layers``, ``model.weights``) by depth in the graph, so a block's projection comes before
    its branch's last BN there. Keras builds the weights eagerly: ~20 s at depth 20 under load (each kernel
    shape's he_normal compiled once), then ~1 s at 56."""
    keras = peers.keras()
    keras.backend.clear_session()  # Keras' layer names count from 0 again, as in a fresh program
    theirs = keras_resnet_v1(keras, (32, 32, 3), depth)
    ours = preset(f"resnet{depth}", data=CIFAR10)
    rows = layer_rows(ours)  # a graph's summary starts with its input, as Keras' functional one
    assert len(rows) == len(theirs.layers)
    assert {row.name: row.kind for row in rows} == {layer.name: type(layer).__name__ for layer in theirs.layers}
    assert {row.name: row.output_shape for row in rows} == {
        layer.name: tuple(layer.output.shape) for layer in theirs.layers}
    assert {v.path: (v.shape, v.trainable) for v in variables(ours)} == {
        w.path: (tuple(w.shape), w.trainable) for w in theirs.weights} and len(theirs.weights) == len(variables(ours))
    assert param_counts(ours) == {
        "total": theirs.count_params(), "trainable": sum(int(np.prod(w.shape)) for w in theirs.trainable_weights),
        "non_trainable": sum(int(np.prod(w.shape)) for w in theirs.non_trainable_weights)}
    assert param_counts(ours)["total"] == {20: 274_442, 56: 861_770}[depth]  # the example's summary()


def kinds(name: str) -> list[str]:
    return [node.spec["kind"] for node in preset(name, data=CIFAR10).graph]


def test_the_variants_change_the_norms_and_nothing_else():
    """Without BN, the same layers less BN; SkipInit's scalar ends each of the 9 branches (1 parameter each); group
    norm (8 groups) in each BN's place; the shortcuts' projections have no norm in any."""
    with_bn = kinds("resnet20")
    assert with_bn.count("batch_norm") == 19 and "group_norm" not in with_bn
    assert kinds("resnet20-nobn") == [kind for kind in with_bn if kind != "batch_norm"]
    assert kinds("resnet20-gn") == ["group_norm" if kind == "batch_norm" else kind for kind in with_bn]
    assert {node.spec["groups"] for node in preset("resnet20-gn", data=CIFAR10).graph
            if node.spec["kind"] == "group_norm"} == {8}
    skip = preset("resnet20-skipinit", data=CIFAR10)
    ends = [node for node in skip.graph if node.spec["kind"] == "skip_init"]
    assert len(ends) == 9 and all(node.path[-2:] == ("layers", 3) for node in ends)  # conv, relu, conv, then it
    assert all(node.spec["init"] == 0.0 for node in ends)
    nobn = param_counts(preset("resnet20-nobn", data=CIFAR10))
    assert nobn == {"total": 274_442 - 4 * 688, "trainable": 274_442 - 4 * 688, "non_trainable": 0}  # 688 channels
    assert param_counts(skip) == {**nobn, "total": nobn["total"] + 9, "trainable": nobn["total"] + 9}
    assert param_counts(preset("resnet20-gn", data=CIFAR10)) == {
        "total": 274_442 - 2 * 688, "trainable": 274_442 - 2 * 688, "non_trainable": 0}


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56, 110])
def test_depth_counts_the_weighted_layers_but_the_projections(depth):
    model = build(f"resnet{depth}", resnets.resnet_v1(depth), data=CIFAR10)
    weighted = [node.spec for node in model.graph if node.spec["kind"] in ("conv2d", "dense")]
    projections = [spec for spec in weighted if spec.get("kernel_size") == 1]
    assert len(weighted) - len(projections) == depth and len(projections) == 2
    assert layer_rows(model)[-4].output_shape == (None, 8, 8, 64)  # the last block's, which the 8x8 pooling takes


@pytest.mark.parametrize("depth", [19, 2, 0, 20.0, "20"])
def test_a_depth_that_is_not_6n_plus_2_is_a_config_error(depth):
    with pytest.raises(ConfigError, match=r"a ResNet v1's depth is 6n \+ 2 for n >= 1"):
        resnets.resnet_v1(depth)


def test_the_presets_are_toml_data_with_valid_names():
    """Only TOML's types (what a study could write under [models.NAME]), valid model names, and a fresh table per
    layer (no two layers share one dict a caller could change both through)."""
    def toml_types(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and toml_types(v) for k, v in value.items())
        if isinstance(value, list):
            return all(map(toml_types, value))
        return type(value) in (str, int, float, bool)

    for name, layers in resnets.PRESETS.items():
        assert presets()[name] is layers and build(name, layers, data=CIFAR10).name == name
        assert toml_types(layers) and json.loads(json.dumps(layers)) == layers
        tables = []
        stack = list(layers)
        while stack:
            table = stack.pop()
            tables.append(id(table))
            stack += table.get("layers", []) + table.get("shortcut", [])
        assert len(tables) == len(set(tables)), name


def test_on_grayscale_28x28_images_a_resnet_preset_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"model resnet20: layer conv2d: conv2d needs an image input") as error:
        preset("resnet20")
    assert "\n" not in str(error.value) and preset_data("resnet20") == CIFAR10


@pytest.mark.parametrize("name", ["resnet20", "resnet20-skipinit"])
def test_onnx_export_matches_normlab(name):
    """Inference: BN's moving statistics (drawn, not the identity they start as), the projections, the adds and
    the average pooling; SkipInit's scalars drawn away from 0, so every branch counts. Each branch's scale (gamma,
    SkipInit's scalar) is drawn small, so 9 blocks' sums do not saturate the softmax."""
    model = preset(name, data=CIFAR10)
    params, state = init(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    small = lambda shape: rng.uniform(0.1, 0.3, shape)
    draw = {"gamma": small, "scale": small, "beta": lambda shape: rng.normal(0.0, 0.1, shape),
            "moving_mean": lambda shape: rng.normal(0.0, 0.5, shape),
            "moving_variance": lambda shape: rng.uniform(0.5, 2.0, shape)}
    params, state = ({layer: {k: np.float32(draw[k](v.shape)) if k in draw else v for k, v in tree[layer].items()}
                      for layer in tree} for tree in (params, state))
    x = rng.uniform(-1.0, 1.0, (8, 32, 32, 3)).astype(np.float32)
    theirs, ours = peers.onnx_probabilities(model, params, state, x)
    assert ours.max(axis=1).mean() < 0.9, ours.max(axis=1)  # not saturated: the logits show in the probabilities
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)


def test_the_resnets_study_loads_and_says_in_one_line_that_cifar10_is_missing(tmp_path):
    study = builtin("resnets")
    assert study.base.data == "cifar10" and study.base.presets == (
        "resnet20", "resnet20-nobn", "resnet20-skipinit", "resnet20-gn")
    assert (study.base.optimizer, study.base.optimizer_momentum, study.base.learning_rate, study.base.batch_size,
            study.base.normalize, study.base.augment) == ("momentum", 0.9, 0.1, 128, "per_channel", ("crop4", "flip"))
    code, _, err = normlab("run", "resnets", "--data-dir", tmp_path, "--out", tmp_path / "run", cwd=tmp_path)
    one_line_error(code, err, "lacks cifar-10-binary.tar.gz")  # a folder given is the only one searched: no download


def test_the_studys_models_each_train_a_short_epoch_on_cifar_shaped_images(tmp_path, cli_env):
    """The study's four models, one seed, one epoch of 2 steps of 32 random CIFAR-shaped images (an .npz) with its
    recipe (momentum, per-channel normalization, crops and flips) at lr 0.01: at its lr 0.1 resnet20-nobn diverges
    in the first epoch, which is the study's question, not this test's. Compiling four ResNet-20 training programs
    is nearly all of the time: 150 s in all in the study's one worker on 2 cores shared with other test runs."""
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 10
    np.savez(tmp_path / "cifar.npz", x_train=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8), y_train=labels,
             x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y_test=labels[:16])
    code, _, err = normlab("reproduce", "--study", "resnets", "--data", tmp_path / "cifar.npz", "--seeds", "1",
                           "--epochs", "1", "--subset", "64", "--batch-size", "32", "--lr", "0.01",
                           "--out", tmp_path / "run", env=cli_env, cwd=tmp_path)
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["data_shape"] == [[32, 32, 3], 10] and results["config"]["data_splits"]["train"] == 64
    runs = {run["preset"]: run for run in results["runs"]}
    assert set(runs) == set(builtin("resnets").base.presets)
    for name, run in runs.items():
        loss = run["history"]["loss"]
        assert run["status"] == "ok" and len(loss) == 1 and np.isfinite(loss).all(), (name, run)
