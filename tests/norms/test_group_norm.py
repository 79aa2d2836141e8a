"""Group norm against the float64 NumPy reference: per example and group of contiguous channels, over the
group's channels and an image's pixels."""

import jax
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.spec import check_layer
from normlab.norms import group_norm
from norms.layer_check import BATCHES, FLAT, IMAGE, assert_padding_ignored, close, f32, random_case, train_vjp
from reference import norms_numpy as ref

EPS = 1e-3
CASES = [(FLAT, 4), (IMAGE, 2)]  # (an example's shape, groups) of 8 channels


def check_against_reference(x, gamma, beta, dy, groups, eps, **options):
    layer = group_norm(groups, eps, **options)
    params = f32(layer.init(jax.random.key(0), x.shape[1:])[0] | {"gamma": gamma, "beta": beta})
    y, state, dx, dparams = train_vjp(layer, params, {}, x, dy)
    dx_ref, dgamma_ref, dbeta_ref = ref.numerical_vjp(lambda *a: ref.group_norm(*a, groups, eps), [x, gamma, beta], dy)
    close(y, ref.group_norm(x, gamma, beta, groups, eps))
    close(dx, dx_ref)
    close(dparams["gamma"], dgamma_ref, scale=x.size / x.shape[-1])
    close(dparams["beta"], dbeta_ref, scale=x.size / x.shape[-1])
    assert state == {}


@pytest.mark.parametrize("shape,groups", CASES)
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_and_gradients_and_no_state(batch, shape, groups):
    x, gamma, beta, dy = random_case(batch, shape, seed=batch)
    check_against_reference(x, gamma, beta, dy, groups, EPS)


@pytest.mark.parametrize("groups", [1, 8])
def test_one_group_is_layer_norm_over_everything_and_one_channel_each_is_instance_norm(groups):
    x, gamma, beta, dy = random_case(3, IMAGE, seed=groups)
    check_against_reference(x, gamma, beta, dy, groups, 1e-5)


def test_padded_batch_equals_its_real_rows_and_inference_equals_training():
    x, gamma, beta, dy = random_case(24, IMAGE, seed=3)
    layer, params = group_norm(2, EPS), f32({"gamma": gamma, "beta": beta})
    y, _, _, _ = assert_padding_ignored(layer, params, {}, x, dy)
    close(jax.jit(layer.apply, static_argnums=3)(params, {}, np.float32(x), False)[0], np.asarray(y, np.float64))


def test_groups_that_do_not_divide_the_channels_are_a_config_error_naming_divisors():
    with pytest.raises(ConfigError, match=r"^group_norm: groups 32 must divide the 300 channels \(try 20, 25, 30"):
        group_norm().init(jax.random.key(0), (300,))
    with pytest.raises(ConfigError, match=r"groups 3 must divide the 8 channels \(try 1, 2, 4, \.\.\.\)$"):
        group_norm(3).init(jax.random.key(0), IMAGE)


def test_keras_defaults_and_variable_layout():
    layer = group_norm(4)
    params, state, out_shape = layer.init(jax.random.key(0), IMAGE)
    assert layer.kind == "GroupNormalization" and out_shape == IMAGE and state == {}
    np.testing.assert_array_equal(params["gamma"], np.ones(8, np.float32))
    np.testing.assert_array_equal(params["beta"], np.zeros(8, np.float32))
    assert group_norm(4, center=False, scale=False).init(jax.random.key(0), FLAT)[0] == {}
    assert check_layer({"kind": "group_norm"}, "x") == {"kind": "group_norm", "groups": 32, "epsilon": 1e-3,
                                                       "center": True, "scale": True}
