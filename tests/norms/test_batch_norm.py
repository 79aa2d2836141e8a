"""Our BN against the independent float64 NumPy reference, including the masked (padded last batch) path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.spec import check_layer
from normlab.norms import batch_norm
from norms.layer_check import close, train_vjp
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


@pytest.mark.parametrize("batch", [1, 2, 24, 32])
@pytest.mark.parametrize("momentum,eps", [(0.99, 1e-3), (0.9, 1e-5)])
def test_training_forward_backward_and_moving_update(batch, momentum, eps):
    x, gamma, beta, mm, mv, dy, layer, params, state = random_case(batch, seed=batch, momentum=momentum, eps=eps)
    y, new_state, dx, dparams = train_vjp(layer, params, state, x, dy)

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

    (l24, s24), g24 = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, jnp.float32(x), None)
    (l32, s32), g32 = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, jnp.float32(np.r_[x, junk]), mask)
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


# ---- convention = "pytorch": torch.nn.BatchNorm1d/2d ----

# (batch, example shape, momentum): None is the convention's 0.1
PYTORCH_CASES = [(2, (FEATURES,), None), (24, (FEATURES,), None), (32, (FEATURES,), 0.3),
                 (1, (3, 4, FEATURES), None), (2, (3, 4, FEATURES), None), (24, (3, 4, FEATURES), None),
                 (32, (3, 4, FEATURES), 0.3)]


@pytest.mark.parametrize("batch,shape,momentum", PYTORCH_CASES)
def test_pytorch_convention_momentum_weights_the_new_statistic_and_running_variance_is_unbiased(batch, shape,
                                                                                                 momentum):
    """Per channel over N (and H, W): normalized with the biased variance and epsilon 1e-5, running variance
    stepped with the unbiased one, m/(m-1) sigma^2, by momentum (default 0.1), the new statistic's weight."""
    rng = np.random.default_rng(batch)
    x, dy = rng.normal(2.0, 3.0, (batch, *shape)), rng.normal(0.0, 1.0, (batch, *shape))
    _, gamma, beta, moving_mean, moving_var, _, _, params, state = random_case(1, seed=batch)
    layer = batch_norm(momentum, convention="pytorch")
    y, new_state, dx, dparams = train_vjp(layer, params, state, x, dy)
    rows, dy_rows = x.reshape(-1, FEATURES), dy.reshape(-1, FEATURES)  # per-channel BN is flat BN over all pixels
    y_ref, batch_mean, _ = ref.forward(rows, gamma, beta, 1e-5)
    dx_ref, dgamma_ref, dbeta_ref = ref.backward(dy_rows, rows, gamma, 1e-5)
    close(y, y_ref.reshape(x.shape))
    close(dx, dx_ref.reshape(x.shape))
    close(dparams["gamma"], dgamma_ref, scale=len(rows))
    close(dparams["beta"], dbeta_ref, scale=len(rows))
    keep = 1.0 - (0.1 if momentum is None else momentum)
    close(new_state["moving_mean"], ref.moving_update(moving_mean, batch_mean, keep), scale=10)
    close(new_state["moving_variance"], ref.moving_update(moving_var, rows.var(axis=0, ddof=1), keep), scale=10)


def test_pytorch_convention_refuses_one_value_per_feature_in_training_only():
    """Inference at batch 1 is fine, with the moving statistics and epsilon 1e-5."""
    x, gamma, beta, moving_mean, moving_var, _, _, params, state = random_case(1, seed=0)
    layer = batch_norm(convention="pytorch")
    with pytest.raises(ConfigError, match="^batch_norm \\(convention pytorch\\): expected more than 1 value per"):
        layer.apply(params, state, jnp.float32(x), True)
    close(layer.apply(params, state, jnp.float32(x), False)[0], ref.inference(x, gamma, beta, moving_mean, moving_var,
                                                                               1e-5))


def test_pytorch_convention_padded_batch_with_one_real_row_keeps_a_finite_running_variance():
    """One real row has no unbiased variance; the layer steps the running variance with the biased 0."""
    x, gamma, beta, moving_mean, moving_var, _, _, params, state = random_case(1, seed=4)
    x_padded = np.r_[x, np.random.default_rng(1).normal(50.0, 20.0, (31, FEATURES))]
    mask = jnp.float32(np.r_[1.0, np.zeros(31)])
    y, new_state = batch_norm(convention="pytorch").apply(params, state, jnp.float32(x_padded), True, mask)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves((y, new_state)))
    close(y[0], beta)
    close(new_state["moving_mean"], ref.moving_update(moving_mean, x[0], 0.9), scale=10)
    close(new_state["moving_variance"], ref.moving_update(moving_var, np.zeros(FEATURES), 0.9), scale=10)


def test_spec_fills_the_conventions_defaults():
    assert check_layer({"kind": "batch_norm", "convention": "pytorch"}, "x") == {
        "kind": "batch_norm", "momentum": 0.1, "epsilon": 1e-05, "center": True, "scale": True, "convention": "pytorch"}
    assert check_layer({"kind": "batch_norm"}, "x")["momentum"] == 0.99
    assert check_layer({"kind": "batch_norm"}, "x")["epsilon"] == 1e-3
    assert check_layer({"kind": "batch_norm", "convention": "pytorch", "momentum": 0.3}, "x")["momentum"] == 0.3
