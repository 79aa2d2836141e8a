"""max_pool2d against the float64 NumPy loop reference (forward, and the gradient routed to each window's
maximum), both paddings, overlapping and non-overlapping windows, odd sizes; and its shape errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.models import build
from normlab.nn.pooling import max_pool2d
from reference import conv_numpy as ref


@pytest.mark.parametrize("in_shape, pool_size, strides", [
    ((7, 6, 2), 2, None), ((7, 7, 3), 3, 2), ((5, 8, 1), [2, 3], [1, 2]), ((3, 5, 2), 3, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_and_gradient_match_numpy(in_shape, pool_size, strides, padding):
    rng = np.random.default_rng(sum(in_shape))
    layer = max_pool2d(pool_size, strides, padding)
    window = np.broadcast_to(pool_size, 2).tolist()
    steps = window if strides is None else np.broadcast_to(strides, 2).tolist()
    params, state, out_shape = layer.init(jax.random.key(0), in_shape)
    x = rng.normal(size=(2, *in_shape))  # continuous draws: no ties for the maximum
    y_ref = ref.max_pool_forward(x, window, steps, padding)
    dy = rng.normal(size=y_ref.shape)
    y, vjp = jax.vjp(lambda x32: layer.apply(params, state, x32, True)[0], jnp.float32(x))
    (dx,) = vjp(jnp.float32(dy))
    assert (params, state) == ({}, {}) and out_shape == y_ref.shape[1:] == y.shape[1:]
    np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx, np.float64), ref.max_pool_backward(dy, x, window, steps, padding),
                               rtol=1e-6, atol=1e-6)


RESHAPE = {"kind": "reshape", "target_shape": [28, 28, 1]}


@pytest.mark.parametrize("layers, message", [
    ([{"kind": "max_pool2d"}], r"max_pool2d needs an image input .* put \{kind = \"reshape\", target_shape"),
    ([RESHAPE, {"kind": "max_pool2d", "pool_size": [2, 30]}], "a 2x30 window does not fit the 28x28 input"),
    ([RESHAPE, {"kind": "max_pool2d", "strides": [1, 2, 3]}], "strides must be an int in 1..1,048,576 or a list"),
    ([RESHAPE, {"kind": "max_pool2d", "pool_size": True}], "pool_size must be"),
])
def test_bad_pooling_layers_are_one_line_config_errors(layers, message):
    with pytest.raises(ConfigError, match=message) as error:
        build("m", [*layers, {"kind": "flatten"}, {"kind": "dense", "units": 10}])
    assert "\n" not in str(error.value)
