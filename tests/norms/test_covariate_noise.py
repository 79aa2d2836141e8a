"""Santurkar et al.'s injected covariate shift, checked as a distribution (scipy's KS tests), not against our output.

Per unit j: mu_j ~ U(-max_mean, max_mean), sigma_j ~ U(0, max_std), noise N(mu_j, sigma_j^2) per row, redrawn
every training step; identity at inference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from normlab.norms.covariate_noise import covariate_noise
from normlab.train import checkpoint

ROWS, UNITS = 100_000, 64


def noise(layer, state, rows=ROWS, units=UNITS):
    y, new_state = layer.apply({}, state, jnp.zeros((rows, units), jnp.float32), True)
    return np.asarray(y, np.float64), new_state


@pytest.mark.parametrize("max_mean, max_std", [(1.0, 1.0), (3.0, 0.5)])
def test_each_unit_is_normal_with_uniform_mean_and_std(max_mean, max_std):
    layer = covariate_noise(max_mean, max_std)
    _, state, _ = layer.init(jax.random.key(7), (UNITS,))
    n, _ = noise(layer, state)
    means, stds = n.mean(0), n.std(0)
    for j in range(4):  # within a unit: one normal (standardized by its own moments)
        assert stats.kstest((n[:, j] - means[j]) / stds[j], "norm").pvalue > 1e-3
    # the ranges are reached: all 64 draws miss the top 10% with probability 0.9**64 = 0.1%
    assert 0.9 * max_mean < np.abs(means).max() <= max_mean + 0.02
    assert 0.9 * max_std < stds.max() <= max_std * 1.01
    assert stats.kstest(means, stats.uniform(-max_mean, 2 * max_mean).cdf).pvalue > 1e-3
    assert stats.kstest(stds, stats.uniform(0, max_std).cdf).pvalue > 1e-3
    assert np.abs(means).mean() > 0.3 * max_mean  # a zero-mean noise (e.g. N(0, 1)) fails here


def test_noise_is_redrawn_every_step_and_fixed_by_the_state():
    layer = covariate_noise()
    _, state, _ = layer.init(jax.random.key(0), (UNITS,))
    assert state["key"].dtype == jnp.uint32 and state["key"].shape == (2,)
    first, carried = noise(layer, state, rows=2000)
    second, _ = noise(layer, carried, rows=2000)
    assert np.abs(first.mean(0) - second.mean(0)).mean() > 0.1
    np.testing.assert_array_equal(noise(layer, state, rows=2000)[0], first)


def test_inference_is_the_identity_and_gradients_pass_through():
    layer = covariate_noise(2.0, 3.0)
    _, state, _ = layer.init(jax.random.PRNGKey(1), (5,))  # a legacy uint32 key works too
    x = jnp.float32(np.random.default_rng(0).normal(size=(8, 5)))
    y, new_state = layer.apply({}, state, x, False)
    np.testing.assert_array_equal(y, x)
    assert new_state is state
    grad = jax.grad(lambda x: layer.apply({}, state, x, True)[0].sum())(x)
    np.testing.assert_array_equal(grad, np.ones_like(x))


def test_seeds_vmapped_draw_different_noise():
    layer = covariate_noise()
    states = jax.vmap(lambda key: layer.init(key, (UNITS,))[1])(jax.random.split(jax.random.key(0)))
    y = jax.vmap(lambda s: layer.apply({}, s, jnp.zeros((100, UNITS)), True)[0])(states)
    assert not np.allclose(y[0], y[1])


def test_a_checkpointed_state_resumes_the_same_noise(tmp_path):
    layer = covariate_noise()
    _, state, _ = layer.init(jax.random.key(3), (UNITS,))
    _, state = noise(layer, state, rows=10)
    path = checkpoint.save(tmp_path, 1, state, {"config": {}, "seeds": [0], "train_s": 1.0,
                                                  "history": {k: [[0.5]] for k in checkpoint.METRICS}})
    restored = checkpoint.restore(checkpoint.read(path, checkpoint.max_size(state))[0], state)
    np.testing.assert_array_equal(noise(layer, restored, rows=10)[0], noise(layer, state, rows=10)[0])
