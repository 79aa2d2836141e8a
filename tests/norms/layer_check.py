"""What every norm test does with a layer: one training call under ``jax.vjp``, a padded batch, a comparison."""

import jax
import jax.numpy as jnp
import numpy as np

FLAT, IMAGE = (8,), (3, 4, 8)  # an example's shape: features, or height, width, channels
BATCHES = (1, 2, 24, 32)


def random_case(batch, shape, seed):
    """float64 x (mean 2, std 3: far from standardized), gamma, beta and a cotangent dy."""
    rng = np.random.default_rng(seed)
    x, dy = rng.normal(2.0, 3.0, (batch, *shape)), rng.normal(0.0, 1.0, (batch, *shape))
    return x, rng.normal(1.0, 0.5, shape[-1]), rng.normal(0.0, 0.5, shape[-1]), dy


def close(actual, expected, scale=1.0):
    """float32 against float64; ``scale`` widens the absolute tolerance of sums over many values."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=2e-4, atol=2e-5 * scale)


def train_vjp(layer, params, state, x, dy, mask=None):
    """One training call: y, the new state, and the gradients of ``sum(y * dy)`` for x and the params.

    Jitted: one compile per case took 0.6-1.3 s where op-by-op dispatch took 1.3-4.6 s for the same shapes
    (2 shared cores).
    """
    def run(x, params, state, dy, mask):
        y, vjp, new_state = jax.vjp(lambda x, p: layer.apply(p, state, x, True, mask), x, params, has_aux=True)
        return y, new_state, *vjp(dy)

    return jax.jit(run)(jnp.float32(x), params, state, jnp.float32(dy), mask)


def padded(x, rows=32, seed=0):
    """``x`` padded with junk rows far from its distribution, and the mask of its real rows."""
    junk = np.random.default_rng(seed).normal(50.0, 20.0, (rows - len(x), *x.shape[1:]))
    return np.r_[x, junk], jnp.float32(np.r_[np.ones(len(x)), np.zeros(rows - len(x))])


def f32(tree):
    return jax.tree.map(jnp.float32, tree)


def assert_padding_ignored(layer, params, state, x, dy):
    """``x`` padded with masked junk rows: its rows' outputs, the gradients and the state are those of ``x``
    alone, and nothing is NaN (the junk rows' outputs included)."""
    x_padded, mask = padded(x)
    dy_padded = np.r_[dy, np.zeros((len(x_padded) - len(x), *x.shape[1:]))]
    y, new_state, dx, dparams = train_vjp(layer, params, state, x, dy)
    y_padded, state_padded, dx_padded, dparams_padded = train_vjp(layer, params, state, x_padded, dy_padded, mask)
    for leaf in jax.tree.leaves((y_padded, state_padded, dx_padded, dparams_padded)):
        assert np.all(np.isfinite(leaf))
    close(y_padded[:len(x)], np.asarray(y, np.float64), scale=10)
    close(dx_padded[:len(x)], np.asarray(dx, np.float64), scale=10)
    for a, b in zip(jax.tree.leaves((dparams_padded, state_padded)), jax.tree.leaves((dparams, new_state))):
        close(a, np.asarray(b, np.float64), scale=10)
    return y, new_state, dx, dparams
