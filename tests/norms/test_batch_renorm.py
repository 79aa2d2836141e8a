"""Batch renorm against the float64 NumPy reference: Keras' renorm=True with the paper's r, d clipping and schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.spec import check_layer
from normlab.norms import batch_renorm
from norms.layer_check import BATCHES, FLAT, IMAGE, assert_padding_ignored, close, f32, random_case, train_vjp
from reference import batch_norm_numpy as bn_ref, norms_numpy as ref

MOMENTUM, RENORM_MOMENTUM, EPS, RMAX, DMAX = 0.9, 0.8, 1e-3, 1.5, 1.0


def random_state(features, seed):
    """Renorm statistics set against a batch's (mean ~2, std ~3) so that r and d clip on both sides for some
    features and not for others; the first renorm_stddev is below sqrt(eps), where Keras divides by sqrt(eps)."""
    rng = np.random.default_rng(seed)
    moving_stddev = rng.uniform(0.5, 2.0, features)
    return {"moving_mean": rng.normal(0, 1, features), "moving_variance": moving_stddev ** 2 - EPS,
            "moving_stddev": moving_stddev, "renorm_mean": np.array([2.0, 0.0, 5.0, 1.5, 2.0, -5.0, 2.0, 1.0]),
            "renorm_stddev": np.array([1e-4, 1.0, 2.5, 3.0, 3.5, 6.0, 10.0, 2.0])}


def reference_step(x, gamma, beta, state, rmax=RMAX, dmax=DMAX):
    """y, r, d and the new state of one training call."""
    mean, var = ref.batch_moments(x)
    r, d = ref.renorm_correction(mean, var, state["renorm_mean"], state["renorm_stddev"], rmax, dmax, EPS)
    new_state = ref.renorm_update(state, mean, var, MOMENTUM, RENORM_MOMENTUM, EPS)
    return ref.renorm_forward(x, gamma, beta, r, d, EPS), r, d, new_state


def layer(**options):
    return batch_renorm(MOMENTUM, EPS, renorm_momentum=RENORM_MOMENTUM, **({"rmax": RMAX, "dmax": DMAX} | options))


@pytest.mark.parametrize("shape", [FLAT, IMAGE])
@pytest.mark.parametrize("batch", BATCHES)
def test_forward_gradients_and_state_update(batch, shape):
    x, gamma, beta, dy = random_case(batch, shape, seed=batch)
    state = random_state(shape[-1], seed=batch)
    y, new_state, dx, dparams = train_vjp(layer(), f32({"gamma": gamma, "beta": beta}), f32(state), x, dy)
    y_ref, r, d, state_ref = reference_step(x, gamma, beta, state)
    dx_ref, dgamma_ref, dbeta_ref = ref.renorm_backward(dy, x, gamma, r, d, EPS)
    if batch >= 24:  # the case exercises both sides of both clips
        assert np.any(r == RMAX) and np.any(r == 1 / RMAX) and np.any(abs(r - 1.1) < 0.35)
        assert np.any(abs(d) == DMAX) and np.any(abs(d) < DMAX)
    rows = x.size / shape[-1]
    close(y, y_ref, scale=10)
    close(dx, dx_ref)
    close(dparams["gamma"], dgamma_ref, scale=rows)
    close(dparams["beta"], dbeta_ref, scale=rows)
    assert set(new_state) == set(state_ref)
    for name in state_ref:
        close(new_state[name], state_ref[name], scale=10)


def test_without_gamma_and_beta_the_correction_is_r_xhat_plus_d():
    x, _, _, dy = random_case(5, FLAT, seed=11)
    state = random_state(8, seed=11)
    renorm = layer(center=False, scale=False)
    params, _, _ = renorm.init(jax.random.key(0), FLAT)
    y, _, dx, _ = train_vjp(renorm, params, f32(state), x, dy)
    y_ref, r, d, _ = reference_step(x, np.ones(8), np.zeros(8), state)
    dx_ref, _, _ = ref.renorm_backward(dy, x, np.ones(8), r, d, EPS)
    close(y, y_ref, scale=10)
    close(dx, dx_ref)


def test_a_renorm_stddev_below_sqrt_epsilon_counts_as_sqrt_epsilon():
    """Bounds wide enough not to hide it: r = s_B / sqrt(eps) ~ 100 for the first feature (1e-4 would give 3e4)."""
    x, gamma, beta, dy = random_case(4, FLAT, seed=8)
    state = random_state(8, seed=8)
    y, _, _, _ = train_vjp(layer(rmax=1e3, dmax=1e3), f32({"gamma": gamma, "beta": beta}), f32(state), x, dy)
    y_ref, r, _, _ = reference_step(x, gamma, beta, state, 1e3, 1e3)
    assert 10 < r[0] < 1e3
    close(y, y_ref, scale=100)


def test_rmax_1_and_dmax_0_train_exactly_as_plain_batch_norm():
    """r = 1 and d = 0 whatever the renorm statistics: output and gradients are plain BN's (per channel over
    N, H, W, i.e. flat BN over all pixels)."""
    x, gamma, beta, dy = random_case(24, IMAGE, seed=5)
    state = random_state(8, seed=5)
    y, new_state, dx, dparams = train_vjp(layer(rmax=1.0, dmax=0.0), f32({"gamma": gamma, "beta": beta}), f32(state),
                                          x, dy)
    rows, dy_rows = x.reshape(-1, 8), dy.reshape(-1, 8)
    y_ref, mean, _ = bn_ref.forward(rows, gamma, beta, EPS)
    dx_ref, dgamma_ref, dbeta_ref = bn_ref.backward(dy_rows, rows, gamma, EPS)
    close(y, y_ref.reshape(x.shape))
    close(dx, dx_ref.reshape(x.shape))
    close(dparams["gamma"], dgamma_ref, scale=len(rows))
    close(dparams["beta"], dbeta_ref, scale=len(rows))
    close(new_state["moving_mean"], bn_ref.moving_update(state["moving_mean"], mean, MOMENTUM), scale=10)


@pytest.mark.parametrize("warmup,relax", [(2, 3), (2, 0), (0, 2)])
def test_the_clipping_bounds_open_on_the_papers_schedule(warmup, relax):
    """Plain BN (rmax 1, dmax 0) until ``warmup`` steps, then bounds opening linearly over ``relax`` steps."""
    renorm = layer(warmup_steps=warmup, relax_steps=relax)
    x, gamma, beta, _ = random_case(16, FLAT, seed=13)
    params, state, _ = renorm.init(jax.random.key(0), FLAT)
    params, state = f32({"gamma": gamma, "beta": beta}), state | f32(random_state(8, seed=13))
    reference = {name: np.asarray(value, np.float64) for name, value in state.items() if name != "step"}
    train = jax.jit(lambda p, s, x: renorm.apply(p, s, x, True))
    for step in range(7):
        x_step = x + step
        y, state = train(params, state, jnp.float32(x_step))
        rmax, dmax = ref.renorm_bounds(step, RMAX, DMAX, warmup, relax)
        y_ref, _, _, reference = reference_step(x_step, gamma, beta, reference, rmax, dmax)
        close(y, y_ref, scale=10)
        assert state["step"].dtype == jnp.int32 and int(state["step"]) == step + 1
        for name in reference:
            close(state[name], reference[name], scale=10)


def test_padded_batch_equals_its_real_rows():
    x, gamma, beta, dy = random_case(24, IMAGE, seed=3)
    assert_padding_ignored(layer(), f32({"gamma": gamma, "beta": beta}), f32(random_state(8, seed=3)), x, dy)


@pytest.mark.parametrize("batch", [1, 32])
def test_inference_uses_moving_mean_and_variance_and_keeps_state(batch):
    x, gamma, beta, _ = random_case(batch, IMAGE, seed=batch)
    state = f32(random_state(8, seed=batch))
    y, new_state = jax.jit(layer().apply, static_argnums=3)(f32({"gamma": gamma, "beta": beta}), state, x, False)
    mean, variance = (np.asarray(state[name], np.float64) for name in ("moving_mean", "moving_variance"))
    close(y, bn_ref.inference(x, gamma, beta, mean, variance, EPS))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new_state, state))


def test_keras_defaults_state_layout_and_options():
    renorm = batch_renorm()
    params, state, out_shape = renorm.init(jax.random.key(0), IMAGE)
    assert renorm.kind == "BatchNormalization" and out_shape == IMAGE and set(params) == {"gamma", "beta"}
    assert {name: float(value[0]) for name, value in state.items()} == {
        "moving_mean": 0.0, "moving_variance": 1.0, "moving_stddev": 1.0, "renorm_mean": 0.0, "renorm_stddev": 1.0}
    assert all(value.shape == (8,) and value.dtype == jnp.float32 for value in state.values())
    assert "step" in batch_renorm(warmup_steps=1).init(jax.random.key(0), FLAT)[1]
    assert check_layer({"kind": "batch_renorm", "rmax": 1}, "x") == {
        "kind": "batch_renorm", "momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True,
        "renorm_momentum": 0.99, "rmax": 1.0, "dmax": 5.0, "warmup_steps": 0, "relax_steps": 0}


@pytest.mark.parametrize("option,value,message", [
    ("rmax", 0.5, "rmax must be a number >= 1"), ("rmax", float("inf"), "rmax must be a number >= 1"),
    ("dmax", -1.0, "dmax must be a number >= 0"), ("warmup_steps", -1, "warmup_steps must be an int in 0.."),
    ("relax_steps", 2.5, "relax_steps must be an int in 0.."), ("renorm_momentum", 1.0, "must be a number in"),
])
def test_bad_options_are_config_errors(option, value, message):
    with pytest.raises(ConfigError, match=message):
        check_layer({"kind": "batch_renorm", option: value}, "x")
