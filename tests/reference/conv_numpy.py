"""Independent float64 NumPy 2-D convolution, max and average pooling (NHWC), by loops over output positions:
forward and hand-derived backward, with TF's "same" padding worked out from its formula. Never imported by src/."""

import numpy as np


def same_pads(n, k, s):
    """TF: out = ceil(n / s); the (out - 1) s + k - n missing values split half before, the odd one after."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def padded(x, window, strides, padding, value=0.0):
    """x padded for ``padding``, and the (top, left) offset of the original image inside it."""
    if padding == "valid":
        return x, (0, 0)
    (top, bottom), (left, right) = (same_pads(n, k, s) for n, k, s in zip(x.shape[1:3], window, strides))
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value), (top, left)


def positions(xp, window, strides):
    """Every output position (i, j) with the slices of its window in the padded input."""
    rows, cols = ((n - k) // s + 1 for n, k, s in zip(xp.shape[1:3], window, strides))
    for i in range(rows):
        for j in range(cols):
            yield i, j, (slice(None), slice(i * strides[0], i * strides[0] + window[0]),
                         slice(j * strides[1], j * strides[1] + window[1]))


def unpadded(dxp, x, offset):
    return dxp[:, offset[0]:offset[0] + x.shape[1], offset[1]:offset[1] + x.shape[2]]


def output_size(n, k, s, padding):
    return (n - k) // s + 1 if padding == "valid" else -(-n // s)


def conv_forward(x, kernel, bias, strides, padding):
    xp, _ = padded(x, kernel.shape[:2], strides, padding)
    rows, cols = (output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:3], kernel.shape[:2], strides))
    y = np.zeros((x.shape[0], rows, cols, kernel.shape[3]))
    for i, j, window in positions(xp, kernel.shape[:2], strides):
        y[:, i, j] = np.einsum("nabc,abcf->nf", xp[window], kernel) + bias
    return y


def conv_backward(dy, x, kernel, strides, padding):
    """dx, dkernel, dbias: each output position sends dy back through its window's products."""
    xp, offset = padded(x, kernel.shape[:2], strides, padding)
    dxp, dkernel = np.zeros_like(xp), np.zeros_like(kernel)
    for i, j, window in positions(xp, kernel.shape[:2], strides):
        dkernel += np.einsum("nabc,nf->abcf", xp[window], dy[:, i, j])
        dxp[window] += np.einsum("nf,abcf->nabc", dy[:, i, j], kernel)
    return unpadded(dxp, x, offset), dkernel, dy.sum(axis=(0, 1, 2))


def max_pool_forward(x, window, strides, padding):
    xp, _ = padded(x, window, strides, padding, -np.inf)
    rows, cols = (output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:3], window, strides))
    y = np.zeros((x.shape[0], rows, cols, x.shape[3]))
    for i, j, win in positions(xp, window, strides):
        y[:, i, j] = xp[win].max(axis=(1, 2))
    return y


def max_pool_backward(dy, x, window, strides, padding):
    """dx: each window's dy goes to the position of its maximum (inputs without ties)."""
    xp, offset = padded(x, window, strides, padding, -np.inf)
    dxp = np.zeros_like(xp)
    for i, j, win in positions(xp, window, strides):
        patch = xp[win]
        dxp[win] += (patch == patch.max(axis=(1, 2), keepdims=True)) * dy[:, i, j][:, None, None, :]
    return unpadded(dxp, x, offset)


def avg_pool_forward(x, window, strides, padding):
    """Each window's mean over its real values: "same" padding is left out of the count (TF's rule)."""
    xp, _ = padded(x, window, strides, padding)
    real, _ = padded(np.ones_like(x), window, strides, padding)
    rows, cols = (output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:3], window, strides))
    y = np.zeros((x.shape[0], rows, cols, x.shape[3]))
    for i, j, win in positions(xp, window, strides):
        y[:, i, j] = xp[win].sum(axis=(1, 2)) / real[win].sum(axis=(1, 2))
    return y


def avg_pool_backward(dy, x, window, strides, padding):
    """dx: each window's dy, divided by its count of real values, goes to each of them."""
    xp, offset = padded(x, window, strides, padding)
    real, _ = padded(np.ones_like(x), window, strides, padding)
    dxp = np.zeros_like(xp)
    for i, j, win in positions(xp, window, strides):
        dxp[win] += real[win] * (dy[:, i, j] / real[win].sum(axis=(1, 2)))[:, None, None, :]
    return unpadded(dxp, x, offset)
