"""A residual net (``graphs.RESNET``: identity and projection blocks) through every way out of normlab and back:
a .keras file that plain Keras loads, ONNX in onnxruntime, the PyTorch and Keras mirrors (inference and one SGD
step), safetensors; and a functional ResNet that Keras built and saved, read as normlab's nested blocks.

The references are the other frameworks, on the same raw uint8 pixels; normlab's probabilities are the softmax of
its logits on the pixels its training step scales (``train.preprocess.scale_pixels``). Weights are drawn in
NumPy (``graphs.randomized``): BN's gammas of either sign and moving statistics far from the identity, so a weight
that lands in the wrong layer changes the predictions.
"""

import json

import jax
import numpy as np
import pytest

from graphs import IMAGE, RESNET, pixels, randomized, resnet, toml
from normlab.errors import ConfigError
from normlab.interop.keras_io import load_keras, read_keras, set_layers, write_keras
from normlab.interop.mirror import keras_model, torch_model
from normlab.interop.preprocessing import UINT8
from normlab.interop.safetensors_io import read_safetensors, write_safetensors
from normlab.interop.weights import Weights, fitted
from normlab.nn import models
from normlab.nn.summary import describe, variables
from normlab.train.loop import TrainConfig, make_optimizer
from normlab.train.preprocess import scale_pixels
from normlab.train.state import TrainState
from normlab.train.step import make_train_step
from torch_weights import copy_weights, weights_of

try:
    keras = load_keras()
except ConfigError as error:
    pytest.skip(str(error), allow_module_level=True)

TOLERANCE = 1e-5  # probabilities: float32 rounding of the same sums in two programs
BATCH, RATE = 32, 0.05
STEP_TOLERANCE = 1e-5  # weights after one step; measured: 1.2e-7 (float32 rounding of the same sums)


@pytest.fixture(scope="module")
def net() -> Weights:
    """The net with weights drawn; its classifier's quartered, so that its probabilities are not all 0 and 1."""
    model = resnet()
    params, state = randomized(model)
    return Weights(model, params | {"dense": jax.tree.map(lambda w: w / 4, params["dense"])}, state)


def probabilities(weights: Weights, raw) -> np.ndarray:
    logits, _ = models.apply(weights.model, weights.params, weights.state, scale_pixels(raw), False)
    return np.asarray(jax.nn.softmax(logits))


def same(a: Weights, b: Weights) -> bool:
    return all(jax.tree.leaves(jax.tree.map(np.array_equal, (a.params, a.state), (b.params, b.state))))


def test_a_keras_export_is_a_functional_model_predicting_normlab_s_probabilities_on_raw_pixels(net, tmp_path):
    """Keras lists a functional model's weights in its own walk of the graph (the projection's conv before the
    branch's second): one ``set_weights`` list in normlab's order would misplace them; each layer is set by name.
    Read back, it is the same model (its kernel sizes as Keras' config writes them, [3, 3] for 3)."""
    path = tmp_path / "resnet.keras"
    write_keras(net, path)
    loaded = keras.saving.load_model(path)
    assert not isinstance(loaded, keras.Sequential)
    raw = pixels(64)
    expected = probabilities(net, raw)
    assert expected.max(axis=1).mean() < 0.99  # not saturated: the probabilities say something about the logits
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=0, atol=TOLERANCE)
    theirs = ["/".join(w.path.split("/")[-2:]) for w in loaded.weights]
    ours = [v.path for v in variables(net.model)]
    assert sorted(theirs) == sorted(ours) and theirs != ours
    back, preprocessing = read_keras(path)
    assert preprocessing["scale"] == UINT8["scale"]
    assert same(Weights(net.model, *fitted(back, net.model, "resnet.keras")), net)


def test_onnx_runs_the_graph_as_normlab_at_batch_1_and_64(net):
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from normlab.interop.onnx_export import to_onnx
    proto = to_onnx(net.model, net.params, net.state)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    raw = pixels(64)
    expected = probabilities(net, raw)
    for rows in (1, 64):
        theirs = session.run(["probabilities"], {"images": raw[:rows].astype(np.float32)})[0]
        np.testing.assert_allclose(theirs, expected[:rows], rtol=0, atol=TOLERANCE)


def normlab_step(weights: Weights, raw, labels) -> Weights:
    """One step of plain SGD, as ``fit`` takes it (on XLA's GEMM: the optimizer's update after the gradient)."""
    optimizer = make_optimizer(TrainConfig(RATE, BATCH, 1, "sgd", 0.0))
    state = TrainState(weights.params, weights.state, optimizer.init(weights.params), None)
    state, _ = jax.jit(make_train_step(weights.model, optimizer))(state, raw, labels, np.ones(len(raw), np.float32))
    return Weights(weights.model, state.params, state.model_state)


@pytest.fixture(scope="module")
def batch():
    return pixels(BATCH, seed=2), np.random.default_rng(3).integers(0, 10, BATCH).astype(np.int32)


@pytest.fixture(scope="module")
def stepped(net, batch):
    return normlab_step(net, *batch)


def assert_stepped_alike(ours: Weights, theirs: dict, before: Weights, skip=()) -> None:
    """Every variable after the step within ``STEP_TOLERANCE`` of the other framework's, and each kernel moved by
    far more than that (the step is seen, not only the start; a bias before a BN has no gradient)."""
    start = {f"{layer}/{name}": value for tree in (before.params, before.state) for layer, values in tree.items()
             for name, value in values.items()}
    for var in variables(ours.model):
        if var.path in skip:
            continue
        layer, name = var.path.split("/")
        mine = np.asarray((ours.params if var.trainable else ours.state)[layer][name])
        gap = float(np.abs(mine - theirs[var.path]).max())
        assert gap <= STEP_TOLERANCE, f"{var.path} differs by {gap:.2e}"
        assert name != "kernel" or np.abs(mine - start[var.path]).max() > 10 * STEP_TOLERANCE, var.path


def test_the_pytorch_mirror_infers_and_takes_an_sgd_step_as_normlab(net, batch, stepped):
    """PyTorch's running variance takes the unbiased batch variance (Keras and normlab: biased), so after a step
    only the moving means are compared among the statistics (``bench.torch_run.NOTES``)."""
    torch = pytest.importorskip("torch")
    mirrored = torch_model(torch.nn, describe(net.model))
    copy_weights(torch, mirrored, net.model, net.params, net.state)
    raw = pixels(64)
    mirrored.eval()
    with torch.no_grad():
        logits = mirrored(torch.from_numpy(np.asarray(scale_pixels(raw))))
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), probabilities(net, raw), rtol=0, atol=TOLERANCE)
    images, labels = batch
    mirrored.train()
    optimizer = torch.optim.SGD(mirrored.parameters(), lr=RATE)
    torch.nn.functional.cross_entropy(mirrored(torch.from_numpy(np.asarray(scale_pixels(images)))),
                                      torch.from_numpy(labels).long()).backward()
    optimizer.step()
    assert_stepped_alike(stepped, weights_of(mirrored, net.model), net,
                         skip={v.path for v in variables(net.model) if v.path.endswith("/moving_variance")})


def test_the_keras_functional_mirror_takes_the_sgd_step_normlab_takes(net, batch, stepped):
    mirror = keras_model(keras, describe(net.model))
    set_layers(mirror, net)
    mirror.compile(optimizer=keras.optimizers.SGD(learning_rate=RATE), loss="sparse_categorical_crossentropy")
    images, labels = batch
    mirror.fit(np.asarray(scale_pixels(images)), labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    theirs = {f"{layer.name}/{var.path.split('/')[-1]}": var.numpy() for layer in mirror.layers
              for var in layer.weights}
    assert_stepped_alike(stepped, theirs, net)


def test_safetensors_round_trip_the_graph_and_its_weights(net, tmp_path):
    write_safetensors(net, tmp_path / "resnet.safetensors")
    back, _ = read_safetensors(tmp_path / "resnet.safetensors")
    assert back.model.graph == net.model.graph and same(back, net)


def test_normlab_export_of_a_trained_residual_net_predicts_in_plain_keras_what_the_run_predicts(tmp_path, capsys):
    """`normlab train` on an .npz of 8x8 RGB images, `normlab export` (folded or not), plain Keras on the raw test
    images; `normlab evaluate` of the file reads the graph back and scores what the run scores."""
    from normlab.cli import main
    from normlab.interop.trained import final_weights, one_run
    rng = np.random.default_rng(5)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=pixels(320, seed=6), y_train=rng.integers(0, 10, 320), x_test=pixels(100, seed=7),
             y_test=rng.integers(0, 10, 100))
    (tmp_path / "res.toml").write_text(f"[models.resnet]\nlayers = {toml(RESNET)}\n")
    run = tmp_path / "run"
    assert main(["train", "resnet", "--study", str(tmp_path / "res.toml"), "--data", str(data), "--val-split", "64",
                 "--epochs", "1", "--out", str(run)]) == 0
    trained = final_weights(run, *one_run(run, None, None))
    x_test = np.load(data)["x_test"]
    expected = probabilities(trained, x_test)
    for fold in (False, True):
        out = tmp_path / ("res-folded.keras" if fold else "res.keras")
        assert main(["export", str(run), "--out", str(out), *(["--fold-bn"] if fold else [])]) == 0
        loaded = keras.saving.load_model(out)
        assert any(type(layer).__name__ == "Add" for layer in loaded.layers)
        assert any(type(layer).__name__ == "BatchNormalization" for layer in loaded.layers) != fold
        np.testing.assert_allclose(loaded.predict(x_test, verbose=0), expected, rtol=0, atol=TOLERANCE)
    capsys.readouterr()
    scores = []
    for argv in ([str(run)], [str(tmp_path / "res.keras"), "--data", str(data)]):
        assert main(["evaluate", *argv]) == 0
        scores.append(capsys.readouterr().out.split(": test ")[1].split(" (")[0].strip())
    assert scores[0] == scores[1]


def keras_resnet():
    """A functional ResNet as a Keras user writes it: a stem, an identity block whose branch holds a block of its
    own (no activation after its Add, its shortcut the Add's second input), a projection block with
    ``Add()([shortcut, x])``, as keras.applications."""
    layers = keras.layers
    inputs = keras.Input(IMAGE)
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x)))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x)))
    y = layers.Add()([layers.Conv2D(8, 3, padding="same")(y), y])
    x = layers.Activation("relu")(layers.Add()([x, layers.BatchNormalization()(y)]))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same")(x)))
    y = layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(y))
    shortcut = layers.BatchNormalization()(layers.Conv2D(16, 1, strides=2)(x))
    x = layers.Activation("relu")(layers.Add()([shortcut, y]))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(x)), name="keras-resnet")
    rng = np.random.default_rng(4)
    for layer in model.layers:  # BN's weights and statistics away from Keras' identity start: each lands right
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.get_weights()[0].shape  # gamma, beta, moving mean, moving variance
            layer.set_weights([rng.uniform(0.5, 2.0, channels), rng.normal(0.0, 1.0, channels),
                               rng.normal(0.0, 1.0, channels), rng.uniform(0.5, 2.0, channels)])
    return model


def outline(tables) -> list:
    """A spec's kinds, a block as (its layers, its shortcut, its activation)."""
    return [(outline(t["layers"]), outline(t["shortcut"]), t["activation"]) if t["kind"] == "residual"
            else t["kind"] for t in tables]


def test_a_functional_resnet_saved_by_keras_reads_as_nested_blocks_that_predict_what_keras_predicts(tmp_path):
    """``read_keras``'s probe compares the predictions; here the structure, and every array arrived once."""
    original = keras_resnet()
    original.save(tmp_path / "keras-resnet.keras")
    weights, preprocessing = read_keras(tmp_path / "keras-resnet.keras")
    assert outline(weights.model.spec) == [
        "conv2d", "batch_norm", "activation",
        (["conv2d", "batch_norm", "activation", (["conv2d"], [], "linear"), "batch_norm"], [], "relu"),
        (["conv2d", "batch_norm", "activation", "conv2d", "batch_norm"], ["conv2d", "batch_norm"], "relu"),
        "flatten", "dense"]
    assert preprocessing["scale"] == 1 / 255 and preprocessing["mean"] is None
    arrays = lambda leaves: sorted(np.asarray(a, np.float32).tobytes() for a in leaves)  # noqa: E731
    assert arrays(original.get_weights()) == arrays(jax.tree.leaves((weights.params, weights.state)))
    raw = pixels(64)
    np.testing.assert_allclose(probabilities(weights, raw), original.predict(raw, verbose=0), rtol=0, atol=TOLERANCE)


def functional(build):
    """A Keras model of ``build(layers, x)`` on an 8x8 RGB input, ending in a softmax over 10 classes."""
    inputs = keras.Input(IMAGE)
    x = build(keras.layers, inputs)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))


def shared(layers, x):
    dense = layers.Dense(3, name="twice")
    return dense(layers.Reshape((8, 8, 3))(dense(x)))


@pytest.mark.parametrize("build, message", [
    (lambda layers, x: layers.Concatenate(name="joined")([x, layers.Conv2D(2, 1)(x)]),
     "layer 'joined' (Concatenate) takes 2 inputs; normlab joins two paths only by an Add (a residual block)"),
    (lambda layers, x: layers.Add(name="three")([x, layers.Conv2D(3, 1)(x), layers.Conv2D(3, 1)(x)]),
     "layer 'three' (Add) adds 3 tensors; a residual block adds two paths"),
    (lambda layers, x: layers.Add(name="twice")([x, x]),
     "layer 'twice' (Add) adds a tensor to itself; a residual block adds a branch of layers"),
    (shared, "layer 'twice' (Dense) is called 2 times; a normlab layer computes once, with weights of its own"),
    (lambda layers, x: x + layers.Conv2D(3, 1)(x), "is not a Keras layer; normlab reads models built of layers"),
    (lambda layers, x: layers.Add()([x, layers.UpSampling2D(1, name="up")(x)]),
     "layer 'up' is a Keras UpSampling2D, which normlab has no kind for; it reads Activation, Add, "),
])
def test_a_graph_normlab_cannot_express_is_one_line_naming_the_layer(build, message, tmp_path):
    path = tmp_path / "graph.keras"
    functional(build).save(path)
    with pytest.raises(ConfigError) as refused:
        read_keras(path)
    assert str(refused.value).startswith(str(path)) and message in str(refused.value), refused.value
    assert "\n" not in str(refused.value)


def test_normlab_trains_a_functional_resnet_keras_saved_from_its_weights_or_fresh_ones(tmp_path):
    """`normlab train mine.keras`: the file's model, its Keras weights as the first step's (the run's init file holds
    exactly Keras' arrays), its preprocessing; `--reinit` the same layers from the seed's own draw."""
    from normlab.cli import main
    from normlab.interop.trained import final_weights, one_run
    original = keras_resnet()
    original.save(tmp_path / "mine.keras")
    rng = np.random.default_rng(8)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=pixels(160, seed=9), y_train=rng.integers(0, 10, 160), x_test=pixels(40, seed=10),
             y_test=rng.integers(0, 10, 40))
    runs = {}
    for name, extra in (("from-file", []), ("fresh", ["--reinit"])):
        runs[name] = tmp_path / name
        assert main(["train", str(tmp_path / "mine.keras"), "--data", str(data), "--val-split", "32", "--epochs",
                     "1", "--batch-size", "16", "--out", str(runs[name]), *extra]) == 0
    results = json.loads((runs["from-file"] / "results.json").read_text())
    started, _ = read_safetensors(runs["from-file"] / "init" / "keras-resnet.safetensors")
    arrays = lambda leaves: sorted(np.asarray(a, np.float32).tobytes() for a in leaves)  # noqa: E731
    assert arrays(original.get_weights()) == arrays(jax.tree.leaves((started.params, started.state)))
    assert results["config"]["init_from"].endswith("keras-resnet.safetensors")
    fresh = json.loads((runs["fresh"] / "results.json").read_text())
    assert fresh["config"]["init_from"] is None
    for run in runs.values():
        trained = final_weights(run, *one_run(run, None, None))
        assert trained.finite() and trained.model.spec == started.model.spec
