"""BN folding: the folded model predicts what the unfolded one does at inference, its weights are the issue's
formulas (float64 NumPy here), and a BN that cannot fold stays. Weights are drawn in NumPy and small batches run
eagerly (one batch shape per test), so no initializer or whole model is compiled for a few dozen images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.nn import models
from normlab.nn.fold import fold, folded
from normlab.nn.registry import KINDS
from normlab.nn.summary import param_counts
from graphs import BN, RELU, conv, pixels, randomized, resnet
from reference import batch_norm_numpy as ref


def images(n, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.0, 1.0, (n, 28, 28)), jnp.float32)


def logits(model, params, state, batches, compiled=False):
    """Inference logits of the batches, concatenated. Eager ops are compiled once per shape and shared by the tests,
    which beats compiling each model for one small batch; the real test set's ten large batches are the opposite."""
    def run(x):
        return models.apply(model, params, state, x, False)[0]
    run = jax.jit(run) if compiled else run
    return np.concatenate([run(x) for x in batches])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def assert_same_predictions(model, params, state, batches, compiled=False):
    """Softmax probabilities within 1e-5; logits within float32 rounding of sums over a few hundred terms."""
    before = logits(model, params, state, batches, compiled)
    after = logits(*fold(model, params, state), batches, compiled)
    np.testing.assert_array_less(np.abs(softmax(after) - softmax(before)), 1e-5)
    np.testing.assert_allclose(after, before, rtol=0, atol=5e-6 * max(1.0, np.abs(before).max()))


def kinds(model):
    return [node.spec["kind"] for node in model.graph]


@pytest.mark.parametrize("kind, options", [
    ("batch_norm", {}), ("batch_norm", {"convention": "pytorch"}), ("batch_norm", {"center": False}),
    ("batch_norm", {"scale": False}), ("batch_renorm", {}), ("ghost_batch_norm", {"virtual_batch_size": 4}),
])
def test_each_foldable_kind_infers_with_the_moving_affine(kind, options):
    """What makes a kind foldable: at inference it is gamma (x - moving_mean) / sqrt(moving_variance + eps) + beta."""
    model = models.build("one", [{"kind": "flatten"}, {"kind": kind, **options}, {"kind": "dense", "units": 10}])
    params, state = randomized(model)
    (name, layer), epsilon = model.layers[1], model.spec[1]["epsilon"]
    x = np.random.default_rng(2).normal(0.0, 3.0, (16, 784))  # 4 ghosts of 4 in training; inference ignores them
    y, new_state = layer.apply(params[name], state[name], jnp.asarray(x, jnp.float32), False)
    gamma, beta = (np.asarray(params[name].get(k, default), np.float64) for k, default in (("gamma", 1), ("beta", 0)))
    mean, variance = (np.asarray(state[name][k], np.float64) for k in ("moving_mean", "moving_variance"))
    np.testing.assert_allclose(y, ref.inference(x, gamma, beta, mean, variance, epsilon), rtol=1e-5, atol=1e-5)
    assert new_state is state[name]


@pytest.mark.parametrize("name", ["bn-before", "bn-after", "cnn-bn", "torch-bn-after", "renorm-after", "ghost-after",
                                  "ioffe-sigmoid-bn"])
def test_folded_preset_predicts_as_unfolded(name):
    model = models.preset(name)
    assert_same_predictions(model, *randomized(model), [images(32)])
    assert not {name for name, kind in KINDS.items() if kind.folding and kind.folding.role == "affine"} & set(
        kinds(folded(model)))


def affine(params, state, eps=1e-3):
    """The issue's s and t = beta - mu s, in float64, Keras' default epsilon."""
    gamma, beta, mean, variance = (np.asarray(v, np.float64) for v in (
        params["gamma"], params["beta"], state["moving_mean"], state["moving_variance"]))
    s = gamma / np.sqrt(variance + eps)
    return s, beta - mean * s


def test_bn_before_first_dense_is_the_formulas():
    """Input BN folded forward into the first Dense (rule 2), then the BN after it backward (rule 1)."""
    model = models.preset("bn-before")
    params, state = randomized(model)
    _, new_params, _ = fold(model, params, state)
    s0, t0 = affine(params["batch_normalization"], state["batch_normalization"])
    s1, _ = affine(params["batch_normalization_1"], state["batch_normalization_1"])
    kernel = np.asarray(params["dense"]["kernel"], np.float64)
    inner_kernel, inner_bias = np.diag(s0) @ kernel, t0 @ kernel  # the Dense had no bias: b = 0
    beta1, mean1 = (np.asarray(v, np.float64) for v in (params["batch_normalization_1"]["beta"],
                                                         state["batch_normalization_1"]["moving_mean"]))
    np.testing.assert_allclose(new_params["dense"]["kernel"], inner_kernel @ np.diag(s1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new_params["dense"]["bias"], (inner_bias - mean1) * s1 + beta1, rtol=1e-6, atol=1e-9)
    assert new_params["dense"]["kernel"].dtype == new_params["dense"]["bias"].dtype == jnp.float32


def test_bn_after_forward_fold_is_the_formulas():
    """BN after a ReLU folds into the next Dense (its bias drawn, not 0): W' = diag(s) W, b' = (beta - mu s) W + b."""
    model = models.preset("bn-after")
    params, state = randomized(model)
    _, new_params, _ = fold(model, params, state)
    s, t = affine(params["batch_normalization_1"], state["batch_normalization_1"])
    kernel, bias = (np.asarray(params["dense_1"][k], np.float64) for k in ("kernel", "bias"))
    np.testing.assert_allclose(new_params["dense_1"]["kernel"], np.diag(s) @ kernel, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new_params["dense_1"]["bias"], t @ kernel + bias, rtol=1e-6, atol=1e-9)


CONVS = 3 * 3 * 1 * 16 + 16 + 3 * 3 * 16 * 32 + 32


@pytest.mark.parametrize("name, count", [
    ("bn-after", 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),  # 266,610: baseline's count
    ("bn-before", 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),
    ("cnn-bn", CONVS + 7 * 7 * 32 * 128 + 128 + 128 * 10 + 10),
])
def test_folded_model_has_no_bn_and_biases_everywhere(name, count):
    model = folded(models.preset(name))
    assert model.name == name and "batch_norm" not in kinds(model)
    assert all(layer["use_bias"] for layer in model.spec if layer["kind"] in ("dense", "conv2d"))
    assert param_counts(model) == {"total": count, "trainable": count, "non_trainable": 0}
    assert model.spec[-1]["activation"] == "softmax"


def test_fold_returns_the_folded_model_with_its_own_names():
    model = models.preset("bn-after")
    new_model, new_params, new_state = fold(model, *randomized(model))
    assert new_model == folded(model)
    assert list(new_params) == list(new_state) == ["flatten", "dense", "dense_1", "dense_2"]


# Each BN is annotated with what becomes of it.
KEEPS = [
    {"kind": "reshape", "target_shape": [28, 28, 1]},
    {"kind": "batch_norm"},  # stays: a "same" conv's zero padding follows
    {"kind": "conv2d", "filters": 4, "padding": "same", "activation": "relu"},
    {"kind": "batch_norm", "convention": "pytorch"},  # into the "valid" conv's 4 input channels
    {"kind": "conv2d", "filters": 6, "use_bias": False, "activation": "relu"},
    {"kind": "batch_norm"},  # stays: after a ReLU, before max_pool
    {"kind": "max_pool2d"},
    {"kind": "batch_norm"},  # through flatten into the Dense, its 6 channels repeated over 13x13 positions
    {"kind": "flatten"},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]
CHANNELS = [
    {"kind": "batch_norm"},  # over the 28 columns: stays, the conv after the reshape sees 1 channel
    {"kind": "reshape", "target_shape": [28, 28, 1]},
    {"kind": "conv2d", "filters": 4, "use_bias": False},
    {"kind": "batch_norm", "center": False},  # into the linear conv
    {"kind": "ghost_batch_norm", "scale": False},  # into it too, after the first
    {"kind": "activation", "activation": "tanh"},
    {"kind": "batch_renorm"},  # stays: an activation follows
    {"kind": "activation", "activation": "relu"},
    {"kind": "flatten"},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]
COLUMNS = [
    {"kind": "batch_norm"},  # over the 28 columns, through flatten into the Dense: repeated 28 times
    {"kind": "flatten"},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]


@pytest.mark.parametrize("layers, expected", [
    (KEEPS, ["reshape", "batch_norm", "conv2d", "conv2d", "batch_norm", "max_pool2d", "flatten", "dense"]),
    (CHANNELS, ["batch_norm", "reshape", "conv2d", "activation", "batch_renorm", "activation", "flatten", "dense"]),
    (COLUMNS, ["flatten", "dense"]),
])
def test_mixed_models_fold_what_they_can_and_stay_exact(layers, expected):
    model = models.build("mixed", layers)
    assert kinds(folded(model)) == expected
    assert all(layer["use_bias"] for layer in folded(model).spec if layer["kind"] in ("dense", "conv2d"))
    assert_same_predictions(model, *randomized(model), [images(16)])


# A residual net's BNs, each annotated with what becomes of it: only along a chain.
BLOCKS = [
    conv(8, activation="relu"),
    BN,  # stays: a ReLU before it, and its output is the block's input, which the shortcut reads too
    {"kind": "residual", "activation": "linear", "layers": [
        BN,  # stays: it reads the block's input (so does the shortcut), a ReLU follows
        RELU, conv(8, activation="relu"),
        BN,  # into the "valid" 1x1 conv's input channels (rule 3), inside the branch
        conv(8, kernel_size=1, padding="valid")]},
    BN,  # after the add: through flatten into the Dense (rule 2)
    {"kind": "flatten"},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]


@pytest.mark.parametrize("layers, expected", [
    (None, ["conv2d", "activation", "conv2d", "activation", "conv2d", "add", "activation", "conv2d", "activation",
            "conv2d", "conv2d", "add", "activation", "flatten", "dense"]),  # every BN into the conv before it
    (BLOCKS, ["conv2d", "batch_norm", "batch_norm", "activation", "conv2d", "conv2d", "add", "flatten", "dense"]),
])
def test_residual_nets_fold_along_chains_and_stay_exact(layers, expected):
    model = resnet(layers)
    new_model = folded(model)
    assert kinds(new_model) == expected
    assert [node.inputs for node in new_model.graph if node.spec["kind"] == "add"] == (
        [(1, 4), (10, 9)] if layers is None else [(1, 5)])  # (shortcut, branch): the block kept its shape
    x = jnp.asarray(pixels(32) / 255.0, jnp.float32)
    assert_same_predictions(model, *randomized(model), [x])


def test_models_without_bn_pass_through():
    model = models.preset("cnn-gn")
    params, state = randomized(model)
    new_model, new_params, new_state = fold(model, params, state)
    assert new_model.spec == model.spec
    assert all(new_params[name] is params[name] and new_state[name] is state[name] for name, _ in model.layers)


@pytest.mark.full_data
@pytest.mark.parametrize("name", ["bn-before", "bn-after", "cnn-bn"])
def test_folded_predicts_as_unfolded_on_the_real_test_set(real_data, name):
    model = models.preset(name)
    params, state = randomized(model)
    x = real_data.x_test.astype(np.float32) / 255.0
    chunks = np.split(x, 10 if name.startswith("cnn") else 1)  # the CNN's im2col: 1,000 images at a time
    assert_same_predictions(model, params, state, chunks, compiled=True)
