r"""Injected covariate shift: Santurkar et al. 2018's "noisy BatchNorm" (Sec. 2.1), placed right after a batch norm.

Ioffe & Szegedy credit BN's speed-up to reducing internal covariate shift, the drift of a layer's input
distribution during training. Santurkar et al. test that claim by adding the shift back after BN: if BN still
trains well with this layer behind it, stable layer inputs are not what makes it work. In training, at every
call (every step) and for every unit :math:`j` (last axis), the layer draws a fresh mean and std, then noise
for every row :math:`i`:

.. math::
    \mu_j \sim U(-\text{max\_mean}, \text{max\_mean}), \qquad \sigma_j \sim U(0, \text{max\_std}),
    \qquad y_{ij} = x_{ij} + n_{ij}, \quad n_{ij} \sim N(\mu_j, \sigma_j^2).

Inference is the identity. The PRNG key is state (raw ``uint32`` key data, ``key``), split at every training
call: a carried state draws new noise each step, each seed's init key gives its own, and a checkpoint resumes
the sequence exactly. Padded rows get noise too; the loss ignores them.
"""

import jax

from normlab.layer import Kind, Layer, NonNegative


def covariate_noise(max_mean: NonNegative = 1.0, max_std: NonNegative = 1.0) -> Layer:
    """Keras has no such layer: the class name is ours, so no Keras or PyTorch mirror can be built."""

    def init(key, in_shape):
        return {}, {"key": jax.random.key_data(key)}, in_shape

    def apply(params, state, x, train, mask=None):
        if not train:
            return x, state
        key, mean_key, std_key, noise_key = jax.random.split(jax.random.wrap_key_data(state["key"]), 4)
        # scaled unit draws: U(-max_mean, max_mean) drawn directly overflows its width 2 * max_mean near float32's max
        mean = max_mean * jax.random.uniform(mean_key, x.shape[-1:], x.dtype, -1.0, 1.0)
        std = max_std * jax.random.uniform(std_key, x.shape[-1:], x.dtype)
        return x + mean + std * jax.random.normal(noise_key, x.shape, x.dtype), {"key": jax.random.key_data(key)}

    return Layer("CovariateNoise", init, apply)


# normlab's own class: neither Keras nor PyTorch has it (their mirrors say so); inference is the identity, no ONNX node
KIND = Kind(covariate_noise, onnx=lambda graph, site, x: x, splits=False)
