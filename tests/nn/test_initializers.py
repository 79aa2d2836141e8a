"""Keras' initializers checked as distributions (Kolmogorov–Smirnov against scipy), not against our own output."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from normlab.nn.initializers import glorot_uniform, he_normal, random_normal

SHAPE = (784, 300)


def test_glorot_uniform_is_uniform_on_keras_limit():
    w = np.asarray(glorot_uniform(jax.random.key(1), SHAPE), np.float64).ravel()
    limit = math.sqrt(6 / (784 + 300))
    assert np.abs(w).max() <= limit
    assert stats.kstest(w, stats.uniform(-limit, 2 * limit).cdf).pvalue > 1e-3
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)


def test_he_normal_is_truncated_normal_with_keras_stddev():
    w = np.asarray(he_normal(jax.random.key(2), SHAPE), np.float64).ravel()
    scale = math.sqrt(2 / 784) / 0.87962566103423978  # Keras: stddev of the untruncated normal
    assert np.abs(w).max() <= 2 * scale
    assert stats.kstest(w, stats.truncnorm(-2, 2, scale=scale).cdf).pvalue > 1e-3
    assert w.std() == pytest.approx(math.sqrt(2 / 784), rel=0.01)  # the truncated draw keeps He's variance


def test_random_normal_has_keras_defaults():
    """Keras' RandomNormal(): mean 0, stddev 0.05, untruncated."""
    w = np.asarray(random_normal(jax.random.key(3), SHAPE), np.float64).ravel()
    assert stats.kstest(w, stats.norm(0, 0.05).cdf).pvalue > 1e-3
    assert np.abs(w).max() > 4 * 0.05  # 235,200 draws reach past 4 std: not truncated at 2 like he_normal


def test_different_keys_give_different_weights():
    a, b = (np.asarray(he_normal(jax.random.key(k), (10, 10))) for k in (0, 1))
    assert not np.allclose(a, b)


CONV_SHAPE = (3, 3, 16, 32)  # (kh, kw, in_channels, filters)


def test_conv_kernels_use_keras_fans_over_the_receptive_field():
    """Keras' compute_fans: fan_in = 3*3*16, fan_out = 3*3*32 (not shape[0] and shape[-1])."""
    fan_in, fan_out = 3 * 3 * 16, 3 * 3 * 32
    w = np.asarray(glorot_uniform(jax.random.key(4), CONV_SHAPE), np.float64).ravel()
    limit = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert stats.kstest(w, stats.uniform(-limit, 2 * limit).cdf).pvalue > 1e-3
    h = np.asarray(he_normal(jax.random.key(5), CONV_SHAPE), np.float64).ravel()
    scale = math.sqrt(2 / fan_in) / 0.87962566103423978
    assert stats.kstest(h, stats.truncnorm(-2, 2, scale=scale).cdf).pvalue > 1e-3
    assert h.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
