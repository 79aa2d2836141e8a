"""normlab's weights into a PyTorch mirror (``interop.mirror.torch_model``) and back, for the parity tests.

The mirror's parameters, and its buffers but BN's step counter, come layer by layer in ``nn.summary.variables``'
order (kernel, bias, gamma, beta; moving mean, running variance), a graph's in node order as a chain's; kernels
are transposed from Keras' HWIO and (in, out) to PyTorch's (out, in, ...).
"""

import numpy as np

from normlab.nn.summary import variables

LAYOUT = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}  # Keras' axes in PyTorch's order


def _pairs(mirrored, model) -> list:
    """(variable, tensor) for every variable: parameters for the trainable ones, buffers for the state."""
    found = variables(model)
    buffers = [b for name, b in mirrored.named_buffers() if not name.endswith("num_batches_tracked")]
    return [*zip([v for v in found if v.trainable], mirrored.parameters(), strict=True),
            *zip([v for v in found if not v.trainable], buffers, strict=True)]


def copy_weights(torch, mirrored, model, params, state=None) -> None:
    """``params`` (and ``state``, given: BN's moving statistics) into the mirror."""
    with torch.no_grad():
        for var, tensor in _pairs(mirrored, model):
            if var.trainable or state is not None:
                layer, name = var.path.split("/")
                value = np.asarray((params if var.trainable else state)[layer][name])
                tensor.copy_(torch.from_numpy(value.transpose(LAYOUT[value.ndim]).copy()))


def weights_of(mirrored, model) -> dict[str, np.ndarray]:
    """The mirror's weights as normlab's variables, ``{"layer/variable": array}`` in Keras' layout."""
    return {var.path: tensor.detach().numpy().transpose(np.argsort(LAYOUT[tensor.ndim]))
            for var, tensor in _pairs(mirrored, model)}
