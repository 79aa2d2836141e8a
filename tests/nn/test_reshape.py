"""reshape keeps each example's values in row-major order (NumPy's reshape) and refuses sizes that differ."""

import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.models import build
from normlab.nn.reshape import reshape


def test_reshape_is_numpy_reshape_per_example():
    x = np.arange(2 * 12, dtype=np.float32).reshape(2, 3, 4)
    layer = reshape([2, 3, 2])
    _, _, out_shape = layer.init(None, (3, 4))
    y, _ = layer.apply({}, {}, jnp.asarray(x), True)
    assert out_shape == (2, 3, 2)
    np.testing.assert_array_equal(y, x.reshape(2, 2, 3, 2))


@pytest.mark.parametrize("target, in_shape, expected", [
    ([0, 0, -1], (28, 28), (28, 28, 1)),   # a grayscale image gets its channel axis
    ([0, 0, -1], (32, 32, 3), (32, 32, 3)),  # a colour one stays as it is
    ([-1], (4, 3, 2), (24,)),
    ([2, 0, -1], (4, 3, 2), (2, 3, 4)),
])
def test_zero_copies_the_input_size_and_minus_one_takes_the_rest_as_numpy_does(target, in_shape, expected):
    x = np.arange(2 * np.prod(in_shape), dtype=np.float32).reshape(2, *in_shape)
    layer = reshape(target)
    _, _, out_shape = layer.init(None, in_shape)
    y, _ = layer.apply({}, {}, jnp.asarray(x), True)
    assert out_shape == expected
    np.testing.assert_array_equal(y, x.reshape(2, *expected))  # NumPy's reshape, the sizes written out


@pytest.mark.parametrize("target, message", [
    ([28, 28, 2], r"target_shape \[28, 28, 2\] holds 1,568 values, but the input \(28, 28\) has 784"),
    ([], "target_shape must be a list of 1 to 3 ints"),
    ([1, 28, 28, 1], "target_shape must be a list of 1 to 3 ints"),
    ([784, 0], r"target_shape \[784, 0\] holds 21,952 values, but the input \(28, 28\) has 784"),
    ([784, -2], "target_shape must be a list of 1 to 3 ints"),
    ([-1, -1], r"-1 \(the rest, once\)"),
    ([0, 0, 0], r"copies a size \(0\) the input \(28, 28\) does not have"),
    ([5, -1], r"cannot hold the 784 values"),
    ([784.0], "target_shape must be a list of 1 to 3 ints"),
    (784, "target_shape must be a list of 1 to 3 ints"),
])
def test_bad_target_shapes_are_one_line_config_errors(target, message):
    with pytest.raises(ConfigError, match=message) as error:
        build("m", [{"kind": "reshape", "target_shape": target}, {"kind": "flatten"}, {"kind": "dense", "units": 10}])
    assert "\n" not in str(error.value)


def test_target_shape_is_required():
    with pytest.raises(ConfigError, match="needs target_shape"):
        build("m", [{"kind": "reshape"}, {"kind": "flatten"}, {"kind": "dense", "units": 10}])
