"""The model files normlab writes and reads, told apart by suffix: ``.keras`` (Keras 3), ``.onnx`` (written only)
and ``.safetensors`` (normlab's own). Each carries its preprocessing (``interop.preprocessing``): the Keras and ONNX
models compute it, so they take raw pixels; the safetensors header records it."""

from pathlib import Path

from normlab.errors import ConfigError
from normlab.files import display
from normlab.interop.weights import Weights, fitted
from normlab.nn.models import Model

def read(path: Path) -> tuple[Weights, dict]:
    """A model file normlab reads, ``.keras`` (Keras 3) or ``.safetensors`` (``normlab export``), and the
    preprocessing that turns raw pixels into its model's input."""
    path = Path(path)
    if path.suffix == ".keras":
        from normlab.interop.keras_io import read_keras
        return read_keras(path)
    if path.suffix == ".safetensors":
        from normlab.interop.safetensors_io import read_safetensors
        return read_safetensors(path)
    raise ConfigError(f"{display(path)}: normlab reads .keras and .safetensors model files (or a run folder)")


def write(weights: Weights, fmt: str, path: Path, preprocessing: dict) -> None:
    if fmt == "keras":
        from normlab.interop.keras_io import write_keras
        write_keras(weights, path, preprocessing)
    elif fmt == "onnx":
        from normlab.interop.onnx_export import write_onnx
        write_onnx(weights.model, weights.params, weights.state, path, preprocessing=preprocessing)
    else:
        from normlab.interop.safetensors_io import write_safetensors
        write_safetensors(weights, path, preprocessing)


def initial(path: str, model: Model) -> tuple[dict, dict]:
    """The ``(params, state)`` a run starts from with ``init_from``: the file's weights, if its model is ``model``
    (whatever its preprocessing: the run's own is its config's)."""
    weights, _ = read(Path(path))
    params, state = fitted(weights, model, display(path))
    if not weights.finite():
        raise ConfigError(f"{display(path)} holds weights that are not finite (NaN or inf): nothing to train from")
    return params, state
