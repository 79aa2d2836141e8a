"""dropout: the identity at inference; in training each value kept with probability 1 - rate (a binomial bound) as
x / (1 - rate) exactly, else 0, the mask a function of the step's key; the Keras and PyTorch mirrors, ONNX, a .keras
file read back and batch norm folded through it at inference; and training: the compiled epoch against a loop of
steps fed each step's key, a resumed run bit for bit, the CLI on one device and on two (the same run)."""

import dataclasses
import json
import tomllib
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clitools import normlab
from normlab.errors import ConfigError
from normlab.experiments.config import StudyConfig
from normlab.interop.weights import Weights
from normlab.nn import models
from normlab.nn.dropout import dropout
from normlab.nn.fold import fold
from normlab.nn.summary import describe
from normlab.train.loop import Checkpointing, fit, layer_keys, make_epoch, make_optimizer, shuffled_batches
from normlab.train.state import create
from normlab.train.step import make_train_step

TOLERANCE = 1e-5
STUDY = """
[models.drop]
layers = [
  {kind = "flatten"},
  {kind = "dense", units = 32, activation = "relu"},
  {kind = "dropout", rate = 0.4},
  {kind = "dense", units = 10, activation = "softmax"},
]
"""
LAYERS = tomllib.loads(STUDY)["models"]["drop"]["layers"]
MODEL = models.build("drop", LAYERS)


def drawn(key, shape=(200, 500), rate=0.3):
    x = np.float32(np.random.default_rng(0).normal(size=shape))  # no zeros: a 0 in the output is a dropped value
    y, state = dropout(rate).apply({}, {}, x, True, key=key)
    return x, np.asarray(y), state


def test_inference_is_the_identity_and_so_is_rate_0_in_training():
    x = jnp.float32(np.random.default_rng(1).normal(size=(4, 6)))
    assert dropout(0.5).apply({}, {}, x, False)[0] is x
    assert dropout(0.0).apply({}, {}, x, True, key=jax.random.key(0))[0] is x
    assert dropout(0.5).init(jax.random.key(0), (6,)) == ({}, {}, (6,)) and dropout(0.5).random


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_training_keeps_1_minus_rate_of_the_values_as_x_over_1_minus_rate_and_zeroes_the_rest(rate):
    x, y, state = drawn(jax.random.key(3), rate=rate)
    kept, n = y != 0, x.size
    assert abs(kept.sum() - n * (1 - rate)) < 5 * np.sqrt(n * rate * (1 - rate))  # 5 standard deviations
    np.testing.assert_array_equal(y[kept], x[kept] / np.float32(1 - rate))
    assert state == {} and kept.any(axis=0).all() and kept.any(axis=1).all()  # no row or column dropped whole


def test_the_gradient_is_the_mask_over_1_minus_rate():
    x = jnp.float32(np.random.default_rng(2).normal(size=(8, 16)))
    y, vjp = jax.vjp(lambda x: dropout(0.25).apply({}, {}, x, True, key=jax.random.key(1))[0], x)
    (dx,) = vjp(jnp.ones_like(y))
    np.testing.assert_array_equal(dx, np.where(np.asarray(y) != 0, np.float32(1 / 0.75), 0))


def test_the_same_key_draws_the_same_mask_and_each_step_and_seed_its_own():
    optimizer = make_optimizer(StudyConfig().train_config())
    masks = {}
    for seed in (0, 1):
        keys = layer_keys(MODEL, create(MODEL, optimizer, seed).rng, 2, 2)
        for step in (0, 1):
            key = jax.random.fold_in(keys[step], 2)  # what ``models.outputs`` gives the layer at index 2
            masks[seed, step] = drawn(key)[1] != 0
            np.testing.assert_array_equal(drawn(key)[1] != 0, masks[seed, step])
    assert len({mask.tobytes() for mask in masks.values()}) == 4


def test_a_training_pass_without_a_key_is_an_error_not_a_fixed_draw():
    params, state = models.init(MODEL, jax.random.key(0))
    with pytest.raises(ValueError, match="layer dropout draws in training: pass a key"):
        models.apply(MODEL, params, state, jnp.ones((2, 28, 28)), True)
    a, b = (models.apply(MODEL, params, state, jnp.ones((2, 28, 28)), True, key=jax.random.key(k))[0] for k in (0, 1))
    assert not np.array_equal(a, b)


def test_rate_is_required_and_checked_as_keras_does():
    for table, message in (({"kind": "dropout"}, r"\(dropout\): needs rate"),
                           ({"kind": "dropout", "rate": 1}, r"rate must be a number in \[0, 1\), got 1")):
        with pytest.raises(ConfigError, match=message):
            models.build("m", [{"kind": "flatten"}, table, {"kind": "dense", "units": 10}])


def weights(model):
    return Weights(model, *models.init(model, jax.random.key(4)))


def probabilities(weights: Weights, x) -> np.ndarray:
    return np.asarray(jax.nn.softmax(models.apply(weights.model, weights.params, weights.state, x, False)[0]))


def images(rows=64):
    return np.random.default_rng(5).integers(0, 256, (rows, 28, 28)).astype(np.uint8)


def test_a_keras_file_computes_the_same_at_inference_and_reads_back_as_dropout(tmp_path):
    """The Keras mirror (keras.layers.Dropout) inside a .keras file: its predictions on raw pixels are normlab's,
    and reading the file gives back the dropout layer and its rate."""
    from normlab.interop.keras_io import load_keras, read_keras, write_keras
    keras = load_keras()
    model, path = weights(MODEL), tmp_path / "m.keras"
    write_keras(model, path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers].count("Dropout") == 1
    np.testing.assert_allclose(loaded.predict(images(), verbose=0), probabilities(model, images() / np.float32(255)),
                               rtol=0, atol=TOLERANCE)
    back, _ = read_keras(path)
    assert [node.spec for node in back.model.graph] == [node.spec for node in MODEL.graph]


def test_a_keras_dropout_with_a_noise_shape_is_refused_in_one_line(tmp_path):
    """A mask shared along axes only shows in training, where the reading's probe cannot see it."""
    from normlab.interop.keras_io import load_keras, read_keras
    keras = load_keras()
    path = tmp_path / "shared.keras"
    keras.Sequential([keras.Input((28, 28)), keras.layers.Dropout(0.5, noise_shape=(None, 1, 28)),
                      keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]).save(path)
    with pytest.raises(ConfigError, match=r"\(Dropout\): normlab drops each value on its own") as error:
        read_keras(path)
    assert "\n" not in str(error.value)


def test_the_pytorch_mirror_in_eval_computes_what_normlab_computes():
    torch = pytest.importorskip("torch")
    from normlab.interop.mirror import torch_model
    model = weights(MODEL)
    mirrored = torch_model(torch.nn, describe(MODEL))
    assert sum(isinstance(module, torch.nn.Dropout) and module.p == 0.4 for module in mirrored) == 1
    linears = [module for module in mirrored if isinstance(module, torch.nn.Linear)]
    with torch.no_grad():
        for linear, name in zip(linears, ("dense", "dense_1"), strict=True):
            linear.weight.copy_(torch.from_numpy(np.asarray(model.params[name]["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(model.params[name]["bias"])))
        x = images() / np.float32(255)
        theirs = torch.softmax(mirrored.eval()(torch.from_numpy(x)), -1).numpy()
    np.testing.assert_allclose(theirs, probabilities(model, x), rtol=0, atol=TOLERANCE)


def test_onnx_export_matches_onnxruntime():
    onnxruntime = pytest.importorskip("onnxruntime")
    from normlab.interop.onnx_export import to_onnx
    model = weights(MODEL)
    proto = to_onnx(*model)
    assert not any(node.op_type == "Dropout" for node in proto.graph.node)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(["probabilities"], {"images": images().astype(np.float32)})[0]
    np.testing.assert_allclose(theirs, probabilities(model, images() / np.float32(255)), rtol=0, atol=TOLERANCE)


def test_batch_norm_folds_through_it_at_inference():
    model = models.build("bn-drop", [{"kind": "flatten"}, {"kind": "batch_norm"}, {"kind": "dropout", "rate": 0.5},
                                     {"kind": "dense", "units": 10, "activation": "softmax"}])
    params, state = models.init(model, jax.random.key(0))
    rng = np.random.default_rng(6)
    state["batch_normalization"] = {"moving_mean": jnp.float32(rng.normal(size=784)),
                                    "moving_variance": jnp.float32(rng.uniform(0.5, 2, 784))}
    folded = Weights(*fold(model, params, state))
    assert [node.spec["kind"] for node in folded.model.graph] == ["flatten", "dropout", "dense"]
    x = images() / np.float32(255)
    np.testing.assert_allclose(probabilities(folded, x), probabilities(Weights(model, params, state), x), rtol=0,
                               atol=TOLERANCE)


@pytest.fixture(scope="module")
def small(small_data):
    return SimpleNamespace(x_train=small_data.x_train[:160], y_train=small_data.y_train[:160],
                           x_val=small_data.x_val[:100], y_val=small_data.y_val[:100], x_test=small_data.x_test[:100],
                           y_test=small_data.y_test[:100])


def test_the_compiled_epoch_draws_each_steps_own_key(small_data):
    """88 examples at batch 32: 3 steps, the last of 24 rows; a loop of plain steps, each given its step's key
    (``layer_keys``), ends at the epoch's weights."""
    n, batch, epoch = 88, 32, 1
    optimizer = make_optimizer(StudyConfig().train_config())
    images_u8, labels = small_data.x_train[:n], small_data.y_train[:n].astype(np.int32)
    ts0 = create(MODEL, optimizer, 3)
    compiled, _ = jax.jit(make_epoch(MODEL, optimizer, n, batch))(ts0, images_u8, labels, jnp.int32(epoch))
    step = jax.jit(make_train_step(MODEL, optimizer))
    order = np.asarray(shuffled_batches(ts0.rng, epoch, n, batch))
    mask = (np.arange(order.size) < n).astype(np.float32).reshape(order.shape)
    ts = ts0
    for index, key in enumerate(layer_keys(MODEL, ts0.rng, epoch, len(order))):
        ts, _ = step(ts, images_u8[order[index]], labels[order[index]], mask[index], key=key)
    for a, b in zip(jax.tree.leaves(compiled.params), jax.tree.leaves(ts.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_epochs_equal_one_and_a_resumed_one_bit_for_bit(small, tmp_path):
    config = dataclasses.replace(StudyConfig().train_config(), epochs=2, learning_rate=0.05)
    whole = fit(MODEL, small, [0, 1], config)

    def part(epochs, resume):
        checkpointing = Checkpointing(tmp_path, {"model": "drop"}, resume, warn=pytest.fail)
        return fit(MODEL, small, [0, 1], dataclasses.replace(config, epochs=epochs), checkpointing=checkpointing)

    part(1, False)
    resumed = part(2, True)
    assert resumed.resumed_from == 1
    for key in whole.history:
        assert whole.history[key].tobytes() == resumed.history[key].tobytes(), key
    assert not np.array_equal(whole.history["loss"][0], whole.history["loss"][1])  # each seed its own draws
    kept = models.build("drop", [{**t, "rate": 0.0} if t["kind"] == "dropout" else t for t in LAYERS])
    assert not np.array_equal(fit(kept, small, [0, 1], config).history["loss"], whole.history["loss"])


def test_the_cli_trains_it_and_two_devices_train_it_as_one(small_data, tmp_path, cli_env):
    """`normlab train` of a study's dropout model on an .npz, on one device and on two (``--devices 2``): each
    device takes its rows of the whole batch's mask, so the two runs are the same run."""
    data = tmp_path / "small.npz"
    np.savez(data, x_train=small_data.x_train[:256], y_train=small_data.y_train[:256], x_val=small_data.x_val[:64],
             y_val=small_data.y_val[:64], x_test=small_data.x_test[:64], y_test=small_data.y_test[:64])
    study = tmp_path / "drop.toml"
    study.write_text(STUDY)
    histories = []
    for devices in ((), ("--devices", "2")):
        out = tmp_path / f"run{len(histories)}"
        code, _, err = normlab("train", "drop", "--study", study, "--data", data, "--epochs", "1", "--lr", "0.05",
                               "--out", out, *devices, env=cli_env)
        assert code == 0, err
        histories.append(json.loads((out / "results.json").read_text())["runs"][0]["history"])
    assert 0 < histories[0]["loss"][0] < 10
    for metric in ("loss", "val_loss"):
        np.testing.assert_allclose(histories[1][metric], histories[0][metric], rtol=1e-5, atol=1e-6)
    assert abs(histories[1]["accuracy"][0] - histories[0]["accuracy"][0]) <= 1 / 256  # a near tie may tip
