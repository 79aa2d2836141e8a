"""The frameworks a layer kind's tests compare it with, each skipped with its reason where it is not installed:
Keras 3 on the JAX backend, PyTorch, and onnxruntime running a model's ONNX export."""

import jax
import numpy as np
import pytest


def keras():
    from normlab.errors import ConfigError
    from normlab.interop.keras_io import load_keras
    try:
        found = load_keras()
    except ConfigError as error:
        pytest.skip(str(error))
    assert found.backend.backend() == "jax", "keras was imported before with another backend; these need JAX"
    return found


def torch():
    return pytest.importorskip("torch", reason="torch not installed (the [dev] extra)")


def torch_run(modules: list, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A kind's PyTorch translation (``Kind.torch``'s modules) on channels-last ``x``: its output, and the
    gradient of ``sum(output * dy)`` for ``x``."""
    torch_ = torch()
    xt = torch_.tensor(np.float32(x), requires_grad=True)
    y = torch_.nn.Sequential(*modules)(xt)
    y.backward(torch_.from_numpy(np.float32(dy)))
    return y.detach().numpy(), xt.grad.numpy()


def onnx_probabilities(model, params, state, x) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's probabilities for ``x`` from the model's ONNX export (no preprocessing: ``x`` is the model's
    input), and normlab's, the softmax of its inference logits."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from normlab.interop.onnx_export import to_onnx
    from normlab.interop.preprocessing import NONE
    from normlab.nn.models import apply
    session = onnxruntime.InferenceSession(to_onnx(model, params, state, preprocessing=NONE).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    ours = jax.jit(lambda p, s, x: jax.nn.softmax(apply(model, p, s, x, False)[0]))(params, state, x)
    return session.run(["probabilities"], {"images": np.float32(x)})[0], np.asarray(ours)
