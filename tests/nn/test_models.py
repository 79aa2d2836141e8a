"""Presets match the study's Keras models: counts, layer order, bias-free Dense before BN, and the forward math."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import preset_data
from normlab.errors import ConfigError
from normlab.nn.losses import sparse_categorical_crossentropy
from normlab.layer import Layer
from normlab.nn.models import _check_batch, apply, build, init, outputs, preset, presets
from normlab.nn.registry import KINDS
from normlab.nn.summary import layer_rows, param_counts, variables

MLP, F = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10, 784 + 300 + 100
CONVS, DENSES, CHANNELS = 3 * 3 * 1 * 16 + 3 * 3 * 16 * 32, 7 * 7 * 32 * 128 + 128 * 10 + 10, 16 + 32 + 128
EXPECTED_COUNTS = {
    "baseline": (266_610, 266_610, 0),
    "bn-after": (271_346, 268_978, 2_368),
    "bn-before": (270_946, 268_578, 2_368),
    "bn-after-noisy": (271_346, 268_978, 2_368),  # the noise's PRNG key is no weight (nor Keras' seed state)
    # Keras' counts by hand: kernels and biases; BN 4 per unit, of which gamma and beta trainable
    "ioffe-sigmoid": (784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10,) * 2 + (0,),
    "ioffe-sigmoid-bn": (784 * 100 + 2 * 100 * 100 + 3 * 4 * 100 + 100 * 10 + 10,
                         784 * 100 + 2 * 100 * 100 + 3 * 2 * 100 + 100 * 10 + 10, 3 * 2 * 100),
    # bn-after's Dense layers and a norm on its F = 784 + 300 + 100 features: gamma and beta (scale alone for RMS),
    # batch renorm's five moving variables (Keras' renorm=True), BN's two
    **{name: (MLP + 2 * F,) * 2 + (0,) for name in ("ln-after", "gn-after")},
    "rms-after": (MLP + F, MLP + F, 0),
    "renorm-after": (MLP + 7 * F, MLP + 2 * F, 5 * F),
    **{name: (MLP + 4 * F, MLP + 2 * F, 2 * F) for name in ("ghost-after", "torch-bn-after")},
    # two conv blocks (3x3x1x16, 3x3x16x32) and Dense 7*7*32 -> 128 -> 10; BN variants drop the hidden biases
    "cnn-baseline": (CONVS + 16 + 32 + DENSES + 128,) * 2 + (0,),
    "cnn-bn": (CONVS + DENSES + 4 * CHANNELS, CONVS + DENSES + 2 * CHANNELS, 2 * CHANNELS),
    **{name: (CONVS + DENSES + 2 * CHANNELS,) * 2 + (0,) for name in ("cnn-gn", "cnn-ln")},
}


@pytest.mark.parametrize("name", EXPECTED_COUNTS)
def test_param_counts_match_keras(name):
    counts = param_counts(preset(name))
    assert (counts["total"], counts["trainable"], counts["non_trainable"]) == EXPECTED_COUNTS[name]


def test_layer_sequence_and_shapes_of_bn_before():
    rows = layer_rows(preset("bn-before"))
    assert [r.kind for r in rows] == ["Flatten", "BatchNormalization", "Dense", "BatchNormalization", "Activation",
                                      "Dense", "BatchNormalization", "Activation", "Dense"]
    assert [r.params for r in rows] == [0, 3136, 235_200, 1200, 0, 30_000, 400, 0, 1010]
    assert rows[-1].output_shape == (None, 10)


def test_inspect_lists_trainable_flags():
    flags = {v.path: v.trainable for v in variables(preset("bn-after"))}
    assert flags["batch_normalization/gamma"] and flags["batch_normalization/beta"]
    assert not flags["batch_normalization/moving_mean"] and not flags["batch_normalization/moving_variance"]
    assert flags["dense/kernel"] and flags["dense/bias"]


def test_noise_layers_add_no_variables():
    assert variables(preset("bn-after-noisy")) == variables(preset("bn-after"))
    assert [r.params for r in layer_rows(preset("bn-after-noisy")) if r.kind == "CovariateNoise"] == [0, 0, 0]


def test_the_study_default_stays_the_three_original_presets():
    from normlab.experiments.config import StudyConfig
    assert StudyConfig().presets == ("baseline", "bn-after", "bn-before")


def test_baseline_forward_matches_numpy():
    """Dense + LeakyReLU(0.3) stack recomputed in float64 NumPy from the same weights."""
    model = preset("baseline")
    params, state = init(model, jax.random.key(0))
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28))
    logits, _ = apply(model, params, state, jnp.float32(x), train=True)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    leaky = lambda z: np.where(z > 0, z, 0.3 * z)
    h = leaky(x.reshape(4, -1) @ p["dense"]["kernel"] + p["dense"]["bias"])
    h = leaky(h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"])
    np.testing.assert_allclose(logits, h @ p["dense_2"]["kernel"] + p["dense_2"]["bias"], rtol=1e-4, atol=1e-5)


def test_crossentropy_is_stable_and_matches_numpy():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    labels = np.array([2, 1])
    expected = [np.log(np.exp(logits[0]).sum()) - 3.0, 1000.0]
    np.testing.assert_allclose(sparse_categorical_crossentropy(jnp.float32(logits), jnp.int32(labels)), expected,
                               rtol=1e-6)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("bn-sideways")


def test_dense_gradients_match_numpy():
    """The custom VJP of the dense matmul: dx = g W^T, dW = x^T g, recomputed in float64."""
    from normlab.engine.gemm import matmul
    rng = np.random.default_rng(1)
    x, w, g = rng.normal(size=(5, 7)), rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    y, vjp = jax.vjp(matmul, jnp.float32(x), jnp.float32(w))
    dx, dw = vjp(jnp.float32(g))
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, g @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, x.T @ g, rtol=1e-5, atol=1e-5)


def test_only_batch_limited_layers_make_a_batch_size_undefined():
    """``check_batch`` traces only models with a ``Kind.batch_limited`` layer: every other preset must trace at any
    batch size, or a study would accept a batch that fails hours later."""
    for name in presets():
        model = preset(name, data=preset_data(name))
        limited = any((rule := KINDS[node.spec["kind"]].batch_limited) and rule(node.spec) for node in model.graph)
        for batch in (1, 3, 24):
            try:
                _check_batch(json.dumps([model.name, model.spec, model.data], sort_keys=True, default=str), batch)
            except ConfigError:
                assert limited, f"{name} at batch {batch}"


def test_random_layers_alone_get_a_key_folded_with_their_index():
    """``outputs``' key contract (``Layer.random``): a random layer gets the key folded with its index, every other
    layer no key at all (dense's apply takes none: it would raise), and training without a key is an error, not
    some fixed draw; at inference the layer gets None."""
    seen = []

    def noisy(params, state, x, train, mask=None, key=None):
        seen.append(key)
        return (jax.random.uniform(key, x.shape) if train else x), state  # its draw alone: compared exactly

    model = build("m", [{"kind": "flatten"}, {"kind": "dense", "units": 8}, {"kind": "activation"},
                        {"kind": "dense", "units": 10}])
    layers = list(model.layers)
    layers[2] = ("noise", Layer("Noise", layers[2][1].init, noisy, random=True))
    random = model._replace(layers=tuple(layers))
    assert random.is_random() and not model.is_random() and not any(
        preset(name, data=preset_data(name)).is_random() for name in presets())
    params, state = init(model, jax.random.key(0))
    params["noise"] = state["noise"] = {}
    x, key = jnp.ones((4, 28, 28)), jax.random.key(5)
    values, _ = outputs(random, params, state, x, True, key=key)
    np.testing.assert_array_equal(values[2], jax.random.uniform(jax.random.fold_in(key, 2), (4, 8)))
    with pytest.raises(ValueError, match="layer noise draws in training: pass a key"):
        apply(random, params, state, x, True)
    seen.clear()
    logits, _ = apply(random, params, state, x, False)
    assert seen == [None]
    np.testing.assert_array_equal(logits, apply(model, params, state, x, False)[0])
