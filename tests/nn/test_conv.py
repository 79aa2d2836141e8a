"""conv2d against the float64 NumPy loop reference: forward, input/kernel/bias gradients, both paddings, strides
1 and 2, odd sizes; then the shape checks a user meets (image input, window fits) as one-line ConfigErrors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.conv import conv2d
from normlab.nn.models import build
from normlab.nn.summary import layer_rows
from reference import conv_numpy as ref


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_shape, kernel_size, strides", [
    ((7, 6, 3), 3, 1), ((7, 6, 3), 3, 2), ((5, 9, 2), [2, 3], [2, 1]), ((6, 5, 2), 1, 2)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_and_gradients_match_numpy(in_shape, kernel_size, strides, padding, engine):
    """On every GEMM (``engine``): the convolution is an im2col product."""
    rng = np.random.default_rng(sum(in_shape))
    layer = conv2d(4, kernel_size, strides, padding)
    params, _, out_shape = layer.init(jax.random.key(0), in_shape)
    kernel, bias = np.asarray(params["kernel"], np.float64), rng.normal(size=4)
    x, steps = rng.normal(size=(2, *in_shape)), np.broadcast_to(strides, 2).tolist()
    y_ref = ref.conv_forward(x, kernel, bias, steps, padding)
    dy = rng.normal(size=y_ref.shape)

    @jax.jit  # one program per case: op by op, every GEMM would compile each op again (caches cleared)
    def forward_and_back(x32, p, dy32):
        y, vjp = jax.vjp(lambda x32, p: layer.apply(p, {}, x32, True)[0], x32, p)
        return y, *vjp(dy32)

    y, dx, dparams = forward_and_back(jnp.float32(x), {"kernel": params["kernel"], "bias": jnp.float32(bias)},
                                      jnp.float32(dy))
    dx_ref, dkernel_ref, dbias_ref = ref.conv_backward(dy, x, kernel, steps, padding)
    assert out_shape == y_ref.shape[1:] == y.shape[1:]
    close(y, y_ref)
    close(dx, dx_ref)
    close(dparams["kernel"], dkernel_ref)
    close(dparams["bias"], dbias_ref)


def test_keras_layout_defaults_and_activation():
    """Kernel (kh, kw, in, filters) as Keras stores it, zero bias, no bias when asked, relu applied after the sum."""
    params, state, out_shape = conv2d(8, padding="same").init(jax.random.key(0), (5, 5, 3))
    assert params["kernel"].shape == (3, 3, 3, 8) and not params["bias"].any() and state == {}
    assert out_shape == (5, 5, 8)
    assert "bias" not in conv2d(8, use_bias=False).init(jax.random.key(0), (5, 5, 3))[0]
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3))
    relu = conv2d(8, activation="relu", padding="same")
    y, _ = relu.apply(params, {}, jnp.float32(x), False)
    close(y, np.maximum(ref.conv_forward(x, np.asarray(params["kernel"], np.float64), np.zeros(8), [1, 1], "same"), 0))


CNN = [{"kind": "reshape", "target_shape": [28, 28, 1]},
       {"kind": "conv2d", "filters": 4, "padding": "same", "activation": "relu"},
       {"kind": "max_pool2d"}, {"kind": "conv2d", "filters": 6, "kernel_size": [3, 5], "strides": 2},
       {"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "softmax"}]


def test_a_small_cnn_builds_with_keras_names_and_shapes():
    rows = layer_rows(build("cnn", CNN))
    assert [r.name for r in rows] == ["reshape", "conv2d", "max_pooling2d", "conv2d_1", "flatten", "dense"]
    assert [r.output_shape for r in rows] == [(None, 28, 28, 1), (None, 28, 28, 4), (None, 14, 14, 4),
                                              (None, 6, 5, 6), (None, 180), (None, 10)]
    assert [r.params for r in rows] == [0, 3 * 3 * 4 + 4, 0, 3 * 5 * 4 * 6 + 6, 0, 180 * 10 + 10]


@pytest.mark.parametrize("layers, message", [
    ([{"kind": "conv2d", "filters": 4}], r"conv2d needs an image input \(height, width, channels\), got shape "
                                         r"\(28, 28\); put \{kind = \"reshape\", target_shape = \[0, 0, -1\]\} first"),
    ([CNN[0], {"kind": "conv2d", "filters": 4, "kernel_size": 29}], "a 29x29 window does not fit the 28x28 input"),
    ([CNN[0], {"kind": "conv2d", "filters": 4, "kernel_size": 1000, "padding": "same"}],
     "a 1000x1000 window does not fit the 28x28 input"),  # im2col would trace a million slices
    ([CNN[0], {"kind": "conv2d", "filters": 4, "kernel_size": [3]}], r"kernel_size must be an int in 1\.\.1,048,576 "
                                                                     r"or a list \[height, width\] of two"),
    ([CNN[0], {"kind": "conv2d", "filters": 4, "strides": 0}], "strides must be"),
    ([CNN[0], {"kind": "conv2d", "filters": 4, "padding": "causal"}], "padding must be one of 'valid', 'same'"),
    ([CNN[0], {"kind": "conv2d"}], "needs filters"),
])
def test_bad_conv_layers_are_one_line_config_errors(layers, message):
    with pytest.raises(ConfigError, match=message) as error:
        build("m", [*layers, {"kind": "flatten"}, {"kind": "dense", "units": 10}])
    assert "\n" not in str(error.value)


def test_a_valid_window_may_exactly_fit_and_same_never_shrinks_below_one():
    model = build("m", [CNN[0], {"kind": "conv2d", "filters": 1, "kernel_size": 28}, {"kind": "flatten"},
                        {"kind": "dense", "units": 10}])
    assert layer_rows(model)[1].output_shape == (None, 1, 1, 1)
    same = build("m", [CNN[0], {"kind": "conv2d", "filters": 1, "kernel_size": 28, "strides": 64, "padding": "same"},
                       {"kind": "flatten"}, {"kind": "dense", "units": 10}])
    assert layer_rows(same)[1].output_shape == (None, 1, 1, 1)
