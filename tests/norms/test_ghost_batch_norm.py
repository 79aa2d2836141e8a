"""Ghost batch norm against the float64 NumPy reference: each virtual batch of v consecutive rows normalized by
its own statistics, the moving statistics stepped once per virtual batch, in order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.spec import check_layer
from normlab.norms import ghost_batch_norm
from norms.layer_check import (BATCHES, FLAT, IMAGE, assert_padding_ignored, close, f32, padded, random_case,
                               train_vjp)
from reference import batch_norm_numpy as bn_ref, norms_numpy as ref

MOMENTUM, EPS = 0.9, 1e-3


def random_state(seed):
    rng = np.random.default_rng(seed)
    return {"moving_mean": rng.normal(0, 1, 8), "moving_variance": rng.uniform(0.5, 2.0, 8)}


def check_against_reference(x, gamma, beta, dy, size, mask=None):
    """Outputs and gradients of the real rows, and the new state, against the reference."""
    state = random_state(len(x))
    y, new_state, dx, dparams = train_vjp(ghost_batch_norm(size, MOMENTUM, EPS), f32({"gamma": gamma, "beta": beta}),
                                          f32(state), x, dy, mask)
    y_ref, stats = ref.ghost_forward(x, gamma, beta, EPS, size, mask)
    dx_ref, dgamma_ref, dbeta_ref = ref.ghost_backward(dy, x, gamma, EPS, size, mask)
    real = slice(None) if mask is None else np.asarray(mask) > 0
    close(np.asarray(y)[real], y_ref[real])
    close(np.asarray(dx)[real], dx_ref[real])
    close(dparams["gamma"], dgamma_ref, scale=x.size / 8)
    close(dparams["beta"], dbeta_ref, scale=x.size / 8)
    mean_ref, variance_ref = ref.ghost_update(state["moving_mean"], state["moving_variance"], stats, MOMENTUM)
    close(new_state["moving_mean"], mean_ref, scale=10)
    close(new_state["moving_variance"], variance_ref, scale=10)


@pytest.mark.parametrize("shape", [FLAT, IMAGE])
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_gradients_and_one_state_step_per_virtual_batch(batch, shape):
    """v = 8: batches 1 and 2 are one virtual batch (plain BN), 24 and 32 are 3 and 4."""
    x, gamma, beta, dy = random_case(batch, shape, seed=batch)
    check_against_reference(x, gamma, beta, dy, 8)


def test_a_partly_padded_virtual_batch_uses_its_real_rows():
    """v = 16 over 24 real rows padded to 32: the second virtual batch has 8 real rows and 8 of junk."""
    x, gamma, beta, dy = random_case(24, IMAGE, seed=6)
    x_padded, mask = padded(x)
    check_against_reference(x_padded, gamma, beta, np.r_[dy, np.zeros_like(x_padded[24:])], 16, mask)


@pytest.mark.parametrize("size,shape", [(8, IMAGE), (32, FLAT)])
def test_padded_batch_equals_its_real_rows(size, shape):
    """v = 8: the fourth virtual batch is all padding and is skipped; v = 32: one masked batch."""
    x, gamma, beta, dy = random_case(24, shape, seed=3)
    layer = ghost_batch_norm(size, MOMENTUM, EPS)
    assert_padding_ignored(layer, f32({"gamma": gamma, "beta": beta}), f32(random_state(3)), x, dy)


def test_a_batch_the_virtual_batch_size_does_not_divide_is_a_config_error():
    x, gamma, beta, dy = random_case(24, FLAT, seed=1)
    with pytest.raises(ConfigError, match="^ghost_batch_norm: virtual_batch_size 16 must divide the batch of 24 rows"):
        train_vjp(ghost_batch_norm(16), f32({"gamma": gamma, "beta": beta}), f32(random_state(1)), x, dy)


def test_inference_uses_the_moving_statistics_and_keeps_state():
    x, gamma, beta, _ = random_case(32, IMAGE, seed=2)
    state = f32(random_state(2))
    y, new_state = jax.jit(ghost_batch_norm(8).apply, static_argnums=3)(f32({"gamma": gamma, "beta": beta}), state,
                                                                       jnp.float32(x), False)
    mean, variance = (np.asarray(state[name], np.float64) for name in ("moving_mean", "moving_variance"))
    close(y, bn_ref.inference(x, gamma, beta, mean, variance, 1e-3))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new_state, state))


def test_keras_defaults_and_variable_layout():
    layer = ghost_batch_norm()
    params, state, out_shape = layer.init(jax.random.key(0), IMAGE)
    assert layer.kind == "BatchNormalization" and out_shape == IMAGE and set(params) == {"gamma", "beta"}
    np.testing.assert_array_equal(state["moving_mean"], np.zeros(8, np.float32))
    np.testing.assert_array_equal(state["moving_variance"], np.ones(8, np.float32))
    assert ghost_batch_norm(center=False, scale=False).init(jax.random.key(0), FLAT)[0] == {}
    assert check_layer({"kind": "ghost_batch_norm"}, "x") == {
        "kind": "ghost_batch_norm", "virtual_batch_size": 32, "momentum": 0.99, "epsilon": 1e-3, "center": True,
        "scale": True}
