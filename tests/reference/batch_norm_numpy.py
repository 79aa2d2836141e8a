"""Independent float64 NumPy batch norm: forward, hand-derived backward, moving update. Never imported by src/."""

import numpy as np


def forward(x, gamma, beta, eps):
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)  # biased, as Keras trains with
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma * xhat + beta, mean, var


def backward(dy, x, gamma, eps):
    """dx, dgamma, dbeta from the closed form (Ioffe & Szegedy 2015, section 3)."""
    m = x.shape[0]
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dx = gamma * inv_std / m * (m * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def moving_update(moving, batch_stat, momentum):
    return momentum * moving + (1.0 - momentum) * batch_stat


def inference(x, gamma, beta, moving_mean, moving_var, eps):
    return gamma * (x - moving_mean) / np.sqrt(moving_var + eps) + beta
