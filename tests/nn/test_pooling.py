"""Pooling against the float64 NumPy loop reference (forward, and the gradient routed to each window's maximum or
spread over its real values), both paddings, overlapping and non-overlapping windows, odd sizes; against Keras'
layers and the kinds' PyTorch and ONNX translations; and the shape errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peers
from normlab.data.dataset import Shape
from normlab.errors import ConfigError
from normlab.interop.frameworks import Unsupported
from normlab.nn.models import build, init
from normlab.nn.pooling import avg_pool2d, global_avg_pool2d, max_pool2d
from normlab.nn.registry import KINDS
from normlab.nn.spec import build_layer, check_layer
from reference import conv_numpy as ref

POOLS = {"max": (max_pool2d, ref.max_pool_forward, ref.max_pool_backward),
         "avg": (avg_pool2d, ref.avg_pool_forward, ref.avg_pool_backward)}


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-6, atol=1e-6)


def forward_and_back(layer, x, dy):
    y, vjp = jax.vjp(lambda x32: layer.apply({}, {}, x32, True)[0], jnp.float32(x))
    return y, vjp(jnp.float32(dy))[0]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("in_shape, pool_size, strides", [
    ((7, 6, 2), 2, None), ((8, 6, 2), 2, None), ((7, 7, 3), 3, 2), ((5, 8, 1), [2, 3], [1, 2]), ((3, 5, 2), 3, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_and_gradient_match_numpy(pool, in_shape, pool_size, strides, padding):
    """(8, 6) in 2x2 windows tiles the image (the reshape path, with either padding); the rest overlap, or leave
    a border ("valid" drops it, "same" pads it: (7, 6) one row after, (7, 7) by 3 strided 2 one each side)."""
    build_pool, forward, backward = POOLS[pool]
    rng = np.random.default_rng(sum(in_shape))
    layer = build_pool(pool_size, strides, padding)
    window = np.broadcast_to(pool_size, 2).tolist()
    steps = window if strides is None else np.broadcast_to(strides, 2).tolist()
    params, state, out_shape = layer.init(jax.random.key(0), in_shape)
    x = rng.normal(size=(2, *in_shape))  # continuous draws: no ties for the maximum
    y_ref = forward(x, window, steps, padding)
    dy = rng.normal(size=y_ref.shape)
    y, dx = forward_and_back(layer, x, dy)
    assert (params, state) == ({}, {}) and out_shape == y_ref.shape[1:] == y.shape[1:]
    close(y, y_ref)
    close(dx, backward(dy, x, window, steps, padding))


def test_a_same_border_window_averages_its_real_values_only():
    """TF's rule: a 3x3 image of ones in 2x2 "same" windows is ones everywhere, not 1/2 and 1/4 at the border."""
    y, _ = avg_pool2d(2, padding="same").apply({}, {}, jnp.ones((1, 3, 3, 1)), False)
    np.testing.assert_array_equal(np.asarray(y), np.ones((1, 2, 2, 1)))


def test_global_avg_pool2d_is_each_channels_mean():
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(3, 5, 4, 6)), rng.normal(size=(3, 6))
    layer = global_avg_pool2d()
    y, dx = forward_and_back(layer, x, dy)
    assert layer.init(jax.random.key(0), (5, 4, 6)) == ({}, {}, (6,))
    close(y, x.mean(axis=(1, 2)))
    close(dx, np.broadcast_to(dy[:, None, None, :] / 20, x.shape))


PEER_CASES = [  # kind, image, options: TF's padding splits an even total evenly, as PyTorch's does
    ("avg_pool2d", (7, 7, 3), {"pool_size": 3, "strides": 2, "padding": "same"}),  # one pixel each side
    ("avg_pool2d", (8, 6, 2), {"pool_size": 2}),
    ("avg_pool2d", (5, 8, 1), {"pool_size": [2, 3], "strides": [1, 2]}),
    ("max_pool2d", (7, 7, 3), {"pool_size": 3, "strides": 2, "padding": "same"}),
    ("global_avg_pool2d", (5, 4, 6), {}),
]


def peer_case(kind: str, in_shape: tuple, options: dict):
    """The layer, its options as a checked spec holds them, an input and an output gradient."""
    spec = check_layer({"kind": kind, **options}, "layer")
    rng = np.random.default_rng(len(in_shape) + sum(in_shape))
    layer = build_layer(spec)
    x = rng.normal(size=(3, *in_shape))
    dy = rng.normal(size=(3, *layer.init(jax.random.key(0), in_shape)[2]))
    return layer, {k: v for k, v in spec.items() if k != "kind"}, x, dy


@pytest.mark.parametrize("kind, in_shape, options", PEER_CASES)
def test_keras_layer_of_the_kind_computes_the_same(kind, in_shape, options):
    """The Keras class the mirror builds (the layer's class, the spec's options), on the JAX backend."""
    keras = peers.keras()
    layer, options, x, dy = peer_case(kind, in_shape, options)
    keras_layer = getattr(keras.layers, KINDS[kind].keras_class)(**options)
    y, vjp = jax.vjp(keras_layer, jnp.float32(x))
    ours, our_dx = forward_and_back(layer, x, dy)
    close(ours, np.asarray(y, np.float64))
    close(our_dx, np.asarray(vjp(jnp.float32(dy))[0], np.float64))


@pytest.mark.parametrize("kind, in_shape, options", PEER_CASES)
def test_torch_translation_computes_the_same(kind, in_shape, options):
    layer, options, x, dy = peer_case(kind, in_shape, options)
    y, dx = peers.torch_run(KINDS[kind].torch(peers.torch().nn, options, list(in_shape), False), x, dy)
    ours, our_dx = forward_and_back(layer, x, dy)
    close(ours, np.asarray(y, np.float64))
    close(our_dx, np.asarray(dx, np.float64))


def test_torch_translation_refuses_a_same_padding_with_one_more_after():
    """(7, 6) in 2x2 "same" windows pads one row after, none before: PyTorch pads both sides alike."""
    with pytest.raises(Unsupported, match="avg_pool2d padding \"same\" .* pads one more after"):
        KINDS["avg_pool2d"].torch(peers.torch().nn, {"pool_size": 2, "strides": None, "padding": "same"}, [7, 6, 2],
                                  False)


def test_onnx_export_matches_normlab():
    """ONNX's AveragePool leaves "same" padding out of the count as TF does, here where the total is odd (one more
    after); the global pool is a ReduceMean over height and width."""
    model = build("pools", [{"kind": "avg_pool2d", "pool_size": 2, "padding": "same"},  # 7x6 -> 4x3, pads 1 after
                            {"kind": "avg_pool2d", "pool_size": 2, "strides": 1},
                            {"kind": "global_avg_pool2d"},
                            {"kind": "dense", "units": 10, "activation": "softmax"}], data=Shape((7, 6, 3), 10))
    params, state = init(model, jax.random.key(0))
    x = np.random.default_rng(0).normal(2.0, 3.0, (5, 7, 6, 3)).astype(np.float32)
    theirs, ours = peers.onnx_probabilities(model, params, state, x)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)


RESHAPE = {"kind": "reshape", "target_shape": [28, 28, 1]}


@pytest.mark.parametrize("kind", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("before, options, message", [
    ([], {}, r"{kind} needs an image input .* put \{{kind = \"reshape\", target_shape"),
    ([RESHAPE], {"pool_size": [2, 30]}, "a 2x30 window does not fit the 28x28 input"),
    ([RESHAPE], {"strides": [1, 2, 3]}, "strides must be an int in 1..1,048,576 or a list"),
    ([RESHAPE], {"pool_size": True}, "pool_size must be"),
])
def test_bad_pooling_layers_are_one_line_config_errors(kind, before, options, message):
    with pytest.raises(ConfigError, match=message.format(kind=kind)) as error:
        build("m", [*before, {"kind": kind, **options}, {"kind": "flatten"}, {"kind": "dense", "units": 10}])
    assert "\n" not in str(error.value)


def test_global_avg_pool2d_needs_an_image_and_takes_no_options():
    with pytest.raises(ConfigError, match=r"global_avg_pool2d needs an image input \(height, width, channels\)"):
        build("m", [{"kind": "global_avg_pool2d"}, {"kind": "dense", "units": 10}])
    with pytest.raises(ConfigError, match="global_avg_pool2d takes no options"):
        build("m", [RESHAPE, {"kind": "global_avg_pool2d", "pool_size": 2}, {"kind": "dense", "units": 10}])
