"""Layer norm against the float64 NumPy reference: per example, over the features (last axis) only."""

import jax
import numpy as np
import pytest

from normlab.nn.spec import check_layer
from normlab.norms import layer_norm
from norms.layer_check import BATCHES, FLAT, IMAGE, assert_padding_ignored, close, f32, random_case, train_vjp
from reference import norms_numpy as ref

EPS = 1e-3


@pytest.mark.parametrize("shape", [FLAT, IMAGE])
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_and_gradients_and_no_state(batch, shape):
    x, gamma, beta, dy = random_case(batch, shape, seed=batch)
    params = f32({"gamma": gamma, "beta": beta})
    y, state, dx, dparams = train_vjp(layer_norm(EPS), params, {}, x, dy)
    dx_ref, dgamma_ref, dbeta_ref = ref.numerical_vjp(lambda *a: ref.layer_norm(*a, EPS), [x, gamma, beta], dy)
    close(y, ref.layer_norm(x, gamma, beta, EPS))
    close(dx, dx_ref)
    close(dparams["gamma"], dgamma_ref, scale=x.size / shape[-1])
    close(dparams["beta"], dbeta_ref, scale=x.size / shape[-1])
    assert state == {}


def test_padded_batch_equals_its_real_rows_and_inference_equals_training():
    x, gamma, beta, dy = random_case(24, IMAGE, seed=3)
    layer, params = layer_norm(EPS), f32({"gamma": gamma, "beta": beta})
    y, _, _, _ = assert_padding_ignored(layer, params, {}, x, dy)
    close(jax.jit(layer.apply, static_argnums=3)(params, {}, np.float32(x), False)[0], np.asarray(y, np.float64))


def test_without_gamma_and_beta():
    x, _, _, dy = random_case(5, FLAT, seed=4)
    layer = layer_norm(1e-5, center=False, scale=False)
    params, _, _ = layer.init(jax.random.key(0), FLAT)
    y, _, dx, _ = train_vjp(layer, params, {}, x, dy)
    ones, zeros = np.ones(FLAT), np.zeros(FLAT)
    close(y, ref.layer_norm(x, ones, zeros, 1e-5))
    close(dx, ref.numerical_vjp(lambda x: ref.layer_norm(x, ones, zeros, 1e-5), [x], dy)[0])


def test_keras_defaults_and_variable_layout():
    layer = layer_norm()
    params, state, out_shape = layer.init(jax.random.key(0), IMAGE)
    assert layer.kind == "LayerNormalization" and out_shape == IMAGE and state == {}
    np.testing.assert_array_equal(params["gamma"], np.ones(8, np.float32))
    np.testing.assert_array_equal(params["beta"], np.zeros(8, np.float32))
    assert params["gamma"].dtype == np.float32
    assert layer_norm(center=False, scale=False).init(jax.random.key(0), FLAT)[0] == {}
    assert check_layer({"kind": "layer_norm"}, "x") == {"kind": "layer_norm", "epsilon": 1e-3, "center": True,
                                                       "scale": True}
