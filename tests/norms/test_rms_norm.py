"""RMS norm against the float64 NumPy reference: ``x / sqrt(mean(x^2 over the features) + eps) * scale``."""

import jax
import numpy as np
import pytest

from normlab.nn.spec import check_layer
from normlab.norms import rms_norm
from norms.layer_check import BATCHES, FLAT, IMAGE, assert_padding_ignored, close, f32, random_case, train_vjp
from reference import norms_numpy as ref

EPS = 1e-6


@pytest.mark.parametrize("shape", [FLAT, IMAGE])
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_and_gradients_and_no_state(batch, shape):
    x, scale, _, dy = random_case(batch, shape, seed=batch)
    y, state, dx, dparams = train_vjp(rms_norm(EPS), f32({"scale": scale}), {}, x, dy)
    dx_ref, dscale_ref = ref.numerical_vjp(lambda *a: ref.rms_norm(*a, EPS), [x, scale], dy)
    close(y, ref.rms_norm(x, scale, EPS))
    close(dx, dx_ref)
    close(dparams["scale"], dscale_ref, scale=x.size / shape[-1])
    assert state == {}


def test_epsilon_matters_for_small_inputs():
    """Inputs of rms ~1e-3 with epsilon 1e-4: the epsilon term is 100x the mean square and must be there."""
    x, scale, _, dy = random_case(4, FLAT, seed=9)
    x = x * 1e-3
    y, _, dx, _ = train_vjp(rms_norm(1e-4), f32({"scale": scale}), {}, x, dy)
    close(y, ref.rms_norm(x, scale, 1e-4))
    close(dx, ref.numerical_vjp(lambda x: ref.rms_norm(x, scale, 1e-4), [x], dy, h=1e-9)[0], scale=10)


def test_padded_batch_equals_its_real_rows_and_inference_equals_training():
    x, scale, _, dy = random_case(24, IMAGE, seed=3)
    layer, params = rms_norm(EPS), f32({"scale": scale})
    y, _, _, _ = assert_padding_ignored(layer, params, {}, x, dy)
    close(jax.jit(layer.apply, static_argnums=3)(params, {}, np.float32(x), False)[0], np.asarray(y, np.float64))


def test_keras_defaults_and_variable_layout():
    layer = rms_norm()
    params, state, out_shape = layer.init(jax.random.key(0), IMAGE)
    assert layer.kind == "RMSNormalization" and out_shape == IMAGE and state == {}
    assert list(params) == ["scale"]
    np.testing.assert_array_equal(params["scale"], np.ones(8, np.float32))
    assert check_layer({"kind": "rms_norm"}, "x") == {"kind": "rms_norm", "epsilon": 1e-6}
