"""Shared fixtures: a small synthetic Fashion-MNIST-shaped data set, and the real one when it is present."""

from types import SimpleNamespace

import numpy as np
import pytest


def synthetic_data(n_train=600, n_val=200, n_test=200, seed=0):
    """Ten noisy uint8 templates: learnable in a few epochs, shaped and typed like the real data."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 28, 28))

    def draw(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(templates[labels] + rng.normal(0, 60, (n, 28, 28)), 0, 255).astype(np.uint8)
        return images, labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(n_train), draw(n_val), draw(n_test)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)


@pytest.fixture(scope="session")
def small_data():
    return synthetic_data()


@pytest.fixture(scope="session")
def real_data():
    from normlab.data import load
    from normlab.errors import DataError
    try:
        return load(download=False)
    except DataError as error:
        pytest.skip(f"real Fashion-MNIST not found ({error}); `make test` fetches it")
