"""Our BN against the independent float64 NumPy reference, including the masked (padded last batch) path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.norms import batch_norm
from reference import batch_norm_numpy as ref

FEATURES = 7


def random_case(batch, seed, momentum=0.99, eps=1e-3):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, (batch, FEATURES))
    gamma, beta = rng.normal(1.0, 0.5, FEATURES), rng.normal(0.0, 0.5, FEATURES)
    moving_mean, moving_var = rng.normal(0, 1, FEATURES), rng.uniform(0.5, 2.0, FEATURES)
    dy = rng.normal(0, 1, (batch, FEATURES))
    layer = batch_norm(momentum, eps)
    params = {"gamma": jnp.float32(gamma), "beta": jnp.float32(beta)}
    state = {"moving_mean": jnp.float32(moving_mean), "moving_variance": jnp.float32(moving_var)}
    return x, gamma, beta, moving_mean, moving_var, dy, layer, params, state


def close(actual, expected, scale=1.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=2e-4, atol=2e-5 * scale)


@pytest.mark.parametrize("batch", [1, 2, 24, 32])
@pytest.mark.parametrize("momentum,eps", [(0.99, 1e-3), (0.9, 1e-5)])
def test_training_forward_backward_and_moving_update(batch, momentum, eps):
    x, gamma, beta, mm, mv, dy, layer, params, state = random_case(batch, seed=batch, momentum=momentum, eps=eps)

    def f(x32, p):
        return layer.apply(p, state, x32, True)

    (y, new_state), vjp = jax.vjp(f, jnp.float32(x), params)
    dx, dparams = vjp((jnp.float32(dy), jax.tree.map(jnp.zeros_like, new_state)))

    y_ref, batch_mean, batch_var = ref.forward(x, gamma, beta, eps)
    dx_ref, dgamma_ref, dbeta_ref = ref.backward(dy, x, gamma, eps)
    close(y, y_ref)
    close(dx, dx_ref)
    close(dparams["gamma"], dgamma_ref, scale=batch)
    close(dparams["beta"], dbeta_ref, scale=batch)
    close(new_state["moving_mean"], ref.moving_update(mm, batch_mean, momentum), scale=10)
    close(new_state["moving_variance"], ref.moving_update(mv, batch_var, momentum), scale=10)


@pytest.mark.parametrize("batch", [1, 2, 24, 32])
def test_inference_uses_moving_statistics_and_keeps_state(batch):
    x, gamma, beta, mm, mv, _, layer, params, state = random_case(batch, seed=100 + batch)
    y, new_state = layer.apply(params, state, jnp.float32(x), False)
    close(y, ref.inference(x, gamma, beta, mm, mv, 1e-3))
    assert new_state is state


def test_masked_padded_batch_equals_the_real_rows_alone():
    """24 real rows padded to 32 with junk: outputs, gradients and state equal those of the 24-row batch."""
    x, gamma, beta, mm, mv, dy, layer, params, state = random_case(24, seed=7)
    junk = np.random.default_rng(0).normal(50.0, 20.0, (8, FEATURES))
    mask = jnp.float32(np.r_[np.ones(24), np.zeros(8)])

    def loss(p, xs, m):
        y, s = layer.apply(p, state, xs, True, m)
        return jnp.sum(y[:24] * jnp.float32(dy)), s

    (l24, s24), g24 = jax.value_and_grad(loss, has_aux=True)(params, jnp.float32(x), None)
    (l32, s32), g32 = jax.value_and_grad(loss, has_aux=True)(params, jnp.float32(np.r_[x, junk]), mask)
    close(l32, float(l24), scale=10)
    for a, b in zip(jax.tree.leaves((g32, s32)), jax.tree.leaves((g24, s24))):
        close(a, np.asarray(b, np.float64), scale=10)
    _, dgamma_ref, dbeta_ref = ref.backward(dy, x, gamma, 1e-3)
    close(g32["gamma"], dgamma_ref, scale=24)
    close(g32["beta"], dbeta_ref, scale=24)


def test_keras_defaults_and_variable_layout():
    params, state, out_shape = batch_norm().init(jax.random.key(0), (5,))
    assert out_shape == (5,)
    np.testing.assert_array_equal(params["gamma"], np.ones(5))
    np.testing.assert_array_equal(params["beta"], np.zeros(5))
    np.testing.assert_array_equal(state["moving_mean"], np.zeros(5))
    np.testing.assert_array_equal(state["moving_variance"], np.ones(5))
    assert set(batch_norm(center=False, scale=False).init(jax.random.key(0), (5,))[0]) == set()
