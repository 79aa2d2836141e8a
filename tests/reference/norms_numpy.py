"""Independent float64 NumPy references for layer, group, RMS, renorm and ghost batch norm. Never imported by src/.

Inputs are ``(batch, features)`` or ``(batch, height, width, channels)``; features are the last axis. Each
forward is written from the papers' formulas with plain reductions and loops. Gradients: ``numerical_vjp``
(central differences of these forwards) for the per-example norms; for the batch norms, whose rows are coupled
and make differences slow, batch norm's closed-form backward (``batch_norm_numpy``, Ioffe & Szegedy section 3)
applied per virtual batch, or with renorm's constant r and d folded into gamma and beta.
"""

import numpy as np

from reference import batch_norm_numpy


def numerical_vjp(forward, args, dy, h=1e-6):
    """The gradient of ``sum(forward(*args) * dy)`` with respect to each of ``args``, by central differences."""
    grads = []
    for i, arg in enumerate(args):
        grad = np.zeros_like(arg)
        for index in np.ndindex(arg.shape):
            shifted = [list(args), list(args)]
            for sign, case in zip((1.0, -1.0), shifted):
                case[i] = arg.copy()
                case[i][index] += sign * h
            grad[index] = (np.sum(forward(*shifted[0]) * dy) - np.sum(forward(*shifted[1]) * dy)) / (2 * h)
        grads.append(grad)
    return grads


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def group_norm(x, gamma, beta, groups, eps):
    """Each example's group g: channels [g C/G, (g+1) C/G) and every pixel."""
    y = np.empty_like(x)
    width = x.shape[-1] // groups
    spatial = tuple(range(1, x.ndim))
    for g in range(groups):
        block = x[..., g * width:(g + 1) * width]
        mean = block.mean(axis=spatial, keepdims=True)
        var = ((block - mean) ** 2).mean(axis=spatial, keepdims=True)
        y[..., g * width:(g + 1) * width] = (block - mean) / np.sqrt(var + eps)
    return gamma * y + beta


def rms_norm(x, scale, eps):
    return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps) * scale


def batch_moments(x, mask=None):
    """Per feature over the real rows (and an image's pixels): mean and biased variance."""
    rows = x if mask is None else x[np.asarray(mask) > 0]
    values = rows.reshape(-1, x.shape[-1])
    mean = values.mean(axis=0)
    return mean, ((values - mean) ** 2).mean(axis=0)


def standardize(x, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps)


def ema(moving, new, momentum):
    return momentum * moving + (1.0 - momentum) * new


# ---- batch renormalization (Ioffe 2017) ----

def renorm_bounds(step, rmax, dmax, warmup, relax):
    """The paper's schedule: plain BN until ``warmup``, then the bounds open linearly over ``relax`` steps."""
    if warmup == 0 and relax == 0:
        return rmax, dmax
    opened = float(step >= warmup) if relax == 0 else min(max((step - warmup) / relax, 0.0), 1.0)
    return 1.0 + (rmax - 1.0) * opened, dmax * opened


def renorm_correction(mean, var, renorm_mean, renorm_stddev, rmax, dmax, eps):
    sigma = np.maximum(renorm_stddev, np.sqrt(eps))
    r = np.clip(np.sqrt(var + eps) / sigma, 1.0 / rmax, rmax)
    d = np.clip((mean - renorm_mean) / sigma, -dmax, dmax)
    return r, d


def renorm_forward(x, gamma, beta, r, d, eps, mask=None):
    """``gamma (r xhat + d) + beta`` with the batch's own statistics; r and d are given (constants)."""
    mean, var = batch_moments(x, mask)
    return gamma * (r * standardize(x, mean, var, eps) + d) + beta


def renorm_backward(dy, x, gamma, r, d, eps):
    """dx, dgamma, dbeta of ``gamma (r xhat + d) + beta`` for constant r, d: batch norm's with gamma r for dx;
    dgamma = r sum(dy xhat) + d sum(dy)."""
    rows, dy_rows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])
    dx, dy_xhat, dbeta = batch_norm_numpy.backward(dy_rows, rows, gamma * r, eps)
    return dx.reshape(x.shape), r * dy_xhat + d * dbeta, dbeta


def renorm_update(state, mean, var, momentum, renorm_momentum, eps):
    stddev = np.sqrt(var + eps)
    moving_stddev = ema(state["moving_stddev"], stddev, momentum)
    return {"moving_mean": ema(state["moving_mean"], mean, momentum),
            "moving_variance": np.maximum(moving_stddev ** 2 - eps, 0.0),
            "moving_stddev": moving_stddev,
            "renorm_mean": ema(state["renorm_mean"], mean, renorm_momentum),
            "renorm_stddev": ema(state["renorm_stddev"], stddev, renorm_momentum)}


# ---- ghost batch normalization (Hoffer et al. 2017) ----

def ghost_batches(batch, size):
    """Row ranges of the consecutive virtual batches; a batch of at most ``size`` rows is one."""
    size = min(size, batch)
    return [range(start, start + size) for start in range(0, batch, size)]


def ghost_forward(x, gamma, beta, eps, size, mask=None):
    """y, and each ghost's (mean, var) or None for a ghost without real rows (its outputs left NaN)."""
    mask = np.ones(len(x)) if mask is None else np.asarray(mask, np.float64)
    y, stats = np.full_like(x, np.nan), []
    for rows in ghost_batches(len(x), size):
        if mask[rows.start:rows.stop].sum() == 0:
            stats.append(None)
            continue
        mean, var = batch_moments(x[rows.start:rows.stop], mask[rows.start:rows.stop])
        y[rows.start:rows.stop] = gamma * standardize(x[rows.start:rows.stop], mean, var, eps) + beta
        stats.append((mean, var))
    return y, stats


def ghost_backward(dy, x, gamma, eps, size, mask=None):
    """dx, dgamma, dbeta: batch norm's closed form over each virtual batch's real rows (padding rows need dy 0)."""
    real = np.ones(len(x), bool) if mask is None else np.asarray(mask) > 0
    assert not np.any(dy[~real]), "the reference takes no gradient through padding rows"
    dx, dgamma, dbeta = np.zeros_like(x), np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
    for rows in ghost_batches(len(x), size):
        index = np.arange(rows.start, rows.stop)[real[rows.start:rows.stop]]
        if len(index):
            flat = (-1, x.shape[-1])
            dx_ghost, dgamma_ghost, dbeta_ghost = batch_norm_numpy.backward(dy[index].reshape(flat),
                                                                            x[index].reshape(flat), gamma, eps)
            dx[index], dgamma, dbeta = dx_ghost.reshape(x[index].shape), dgamma + dgamma_ghost, dbeta + dbeta_ghost
    return dx, dgamma, dbeta


def ghost_update(moving_mean, moving_var, stats, momentum):
    """One moving-average step per ghost, in order, skipping the empty ones."""
    for ghost in stats:
        if ghost is not None:
            moving_mean, moving_var = ema(moving_mean, ghost[0], momentum), ema(moving_var, ghost[1], momentum)
    return moving_mean, moving_var
