"""``.keras`` files, written and read with Keras 3 on the JAX backend (no TensorFlow).

Out: the model's Keras mirror (``interop.mirror``, the one that the bench and the parity tests train: a Sequential,
or a functional model for a graph) with normlab's weights set layer by layer, by name, after a ``Rescaling`` (and a
``Normalization``, if the run normalized) that compute its preprocessing (``interop.preprocessing``): the file takes
raw pixels, ``predict(x_test_uint8)`` as a Keras user calls it. In: the model's graph is read as a chain of layers
and residual blocks (``interop.keras_graph``); its leading ``Rescaling`` and ``Normalization`` layers are read back
as that preprocessing (none: pixels / 255, what files took before); each other Keras layer's class and config
become a normlab layer table (the option names are Keras' already), the model is built like any study's, each
layer's weights placed in its normlab layer, and then normlab's predictions on a probe batch of raw pixels,
preprocessed, must match Keras' own on them: a setting normlab does not read (a regularizer is harmless, a
dilation is not) shows up there and is refused, instead of silently computing something else.
"""

import os
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np

from normlab.atomic import replacing_by_name
from normlab.interop.frameworks import Unsupported
from normlab.interop.keras_graph import Block, layers, links, spec
from normlab.interop.mirror import keras_model
from normlab.interop.preprocessing import UINT8, applied, channels, checked
from normlab.errors import ConfigError, shown
from normlab.files import MAX_DEPTH, display, nested_deeper, one_line
from normlab.interop.weights import MAX_FILE_BYTES, Weights, by_layer, from_layers
from normlab.nn import spec as specs
from normlab.data.dataset import Shape
from normlab.nn.models import MAX_SIDE, apply, build
from normlab.nn.registry import KINDS
from normlab.nn.summary import describe

PROBE_ROWS = 16
PROBE_TOLERANCE = 1e-4  # probabilities; both sides compute in float32 with XLA
REASON_CHARS = 1000  # of Keras' error: its safe-mode refusal (363 characters) whole, a dump of a whole config cut
MARKER = b"normlab model file (normlab export)"  # the zip comment of a .keras file normlab wrote
PREPROCESSING = ("Rescaling", "Normalization")  # leading layers of these classes are the file's preprocessing
HEADS = (["Rescaling"], ["Normalization"], ["Rescaling", "Normalization"])  # how they may come


def load_keras():
    """Keras on the JAX backend (unless the process already imported it otherwise)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    try:
        import keras
    except ImportError:
        raise ConfigError(".keras files need Keras 3: pip install keras") from None
    return keras


def _head(k, preprocessing: dict, image: tuple) -> tuple:
    """Keras layers computing ``preprocessing``: a Rescaling, then a Normalization per channel (one mean for a
    grayscale image), whose variance is the float32 std squared, so that Keras' float32 sqrt gives the std back."""
    head = (k.layers.Rescaling(preprocessing["scale"]),)
    if preprocessing["mean"] is None:
        return head
    variance = [float(np.float32(std)) ** 2 for std in preprocessing["std"]]
    per_channel = len(image) == 3
    return head + (k.layers.Normalization(axis=-1 if per_channel else None,
                                          mean=preprocessing["mean"] if per_channel else preprocessing["mean"][0],
                                          variance=variance if per_channel else variance[0]),)


def write_keras(weights: Weights, path: Path, preprocessing: dict = UINT8) -> None:
    """Keras writes the zip itself, into a private folder beside ``path`` (``atomic.replacing_by_name``); its
    comment, which every zip reader skips, marks it as normlab's (``export_target``)."""
    k = load_keras()
    image = weights.model.data.image
    preprocessing = checked(preprocessing, ".keras export", channels(image))
    try:
        model = keras_model(k, describe(weights.model), _head(k, preprocessing, image))
    except Unsupported as error:
        raise ConfigError(f"model {weights.model.name} cannot be a .keras file: {error}") from None
    set_layers(model, weights)
    with replacing_by_name(path, "model.keras") as written:
        try:
            model.save(written)
        except OSError:
            raise
        except Exception as error:  # Keras' own types for what is the folder's problem (a name it cannot write)
            raise ConfigError(f"{display(path)}: Keras could not write it ({type(error).__name__}: "
                              f"{str(error)[:200]})") from None
        with zipfile.ZipFile(written, "a") as archive:
            archive.comment = MARKER


def set_layers(mirror, weights: Weights) -> None:
    """``weights`` into a Keras mirror (``interop.mirror``), each layer's by its name (``interop.weights.by_layer``)."""
    for name, arrays in by_layer(weights).items():
        mirror.get_layer(name).set_weights(arrays)


def _initializer(config) -> str | None:
    """Keras' serialized initializer (``{"class_name": "HeNormal", ...}``) as normlab's option value."""
    name = config.get("class_name") if isinstance(config, dict) else config
    return None if not isinstance(name, str) else {"GlorotUniform": "glorot_uniform", "HeNormal": "he_normal",
                                                   "RandomNormal": "random_normal"}.get(name, name)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def layer_table(layer) -> dict:
    """One Keras layer as a normlab layer table: the options normlab's kind has, from the layer's config."""
    name = type(layer).__name__
    config = layer.get_config()
    if nested_deeper(config, MAX_DEPTH):  # ``_plain`` and the option checks recurse into the values
        raise ConfigError(f"layer {shown(layer.name)}: its config is nested more than {MAX_DEPTH} levels deep")
    for kind, record in KINDS.items():
        if record.keras_class != name:
            continue
        try:
            extra = record.from_keras(config)
        except Unsupported as error:
            raise ConfigError(f"layer {shown(layer.name)} ({name}): {error}") from None
        if extra is None:
            continue
        table = {"kind": kind}
        for option, (check, _) in specs.options(kind).items():
            value = _plain(config.get(option))
            if option == "kernel_initializer":
                value = _initializer(value)
            if value is not None and check.accepts(value):
                table[option] = value
        return table | extra
    readable = sorted({record.keras_class for record in KINDS.values() if record.keras_class})
    raise ConfigError(f"layer {shown(layer.name)} is a Keras {name}, which normlab has no kind for; it reads "
                      f"{', '.join(readable)}")


def _reason(error: Exception) -> str:
    """Keras' error as one line: whole up to ``REASON_CHARS``, else its start and end (where a cause often is)."""
    text = one_line(" ".join(str(error).split()))
    if len(text) > REASON_CHARS:
        text = f"{text[:REASON_CHARS * 2 // 3]} ... {text[-REASON_CHARS // 3:]}"
    return f"{type(error).__name__}: {text}"


def _single(value, what: str, source: str) -> float:
    value = np.asarray(value)
    if value.ndim or value.dtype.kind not in "iuf":
        raise ConfigError(f"{source}: its Rescaling's {what} must be one number, got {shown(value.tolist())}")
    return float(value)


def _per_channel(value, count: int, source: str) -> np.ndarray:
    """A Normalization's mean or variance (broadcast to its input) as one value per channel."""
    value = np.asarray(value, np.float64)
    if not (value.ndim and all(n == 1 for n in value.shape[:-1]) and value.shape[-1] in (1, count)):
        raise ConfigError(f"{source}: its Normalization is not per channel (its mean has shape {value.shape})")
    return np.broadcast_to(value.reshape(-1), (count,))


def _preprocessing(head: list, image: tuple, source: str) -> dict:
    """What the file's leading Rescaling and Normalization compute, (x scale + offset - mean) / sqrt(variance), with
    the std Keras divides by (its float32 sqrt)."""
    if not head:
        return dict(UINT8)
    names = [type(layer).__name__ for layer in head]
    if names not in HEADS:
        raise ConfigError(f"{source}: its first layers are {' then '.join(names)}; normlab reads a Rescaling, a "
                          f"Normalization, or a Rescaling then a Normalization as preprocessing")
    count = channels(image)
    scale, offset, mean, variance = 1.0, 0.0, np.zeros(count), np.ones(count)
    for layer in head:
        if type(layer).__name__ == "Rescaling":
            scale, offset = _single(layer.scale, "scale", source), _single(layer.offset, "offset", source)
        elif layer.invert:
            raise ConfigError(f"{source}: its Normalization inverts (invert=True): not a preprocessing")
        else:
            mean, variance = (_per_channel(v, count, source) for v in (layer.mean, layer.variance))
    if names == ["Rescaling"] and offset == 0:
        return checked({"scale": scale}, source, count)
    return checked({"scale": scale, "mean": (mean - offset).tolist(),
                    "std": np.sqrt(np.maximum(variance, 0).astype(np.float32)).tolist()}, source, count)


def read_keras(path: Path) -> tuple[Weights, dict]:
    """The file's model and weights, and the preprocessing its input takes."""
    source = one_line(path)
    if not Path(path).is_file():
        raise ConfigError(f"{source}: no such file (or not a regular file)")
    if (size := Path(path).stat().st_size) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {size:,} bytes, more than any model normlab builds ({MAX_FILE_BYTES:,})")
    k = load_keras()
    try:
        loaded = k.saving.load_model(path, compile=False, safe_mode=True)
        input_shape = tuple(loaded.input_shape[1:])  # an unbuilt Sequential model has none: AttributeError
        classes = loaded.output_shape[-1]
    except Exception as error:  # Keras raises many types for a damaged or foreign file
        raise ConfigError(f"{source}: not a Keras model file Keras can load ({_reason(error)})") from None
    if not (2 <= len(input_shape) <= 3 and all(type(n) is int and 0 < n <= MAX_SIDE for n in input_shape)
            and type(classes) is int and 0 < classes <= MAX_SIDE):
        raise ConfigError(f"{source}: its input {shown(input_shape)} is not an image of (height, width) or (height, "
                          f"width, channels), or its output {shown(classes)} is not a class count")
    try:
        body, head = links(k, loaded), []
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    while body and not isinstance(body[0], Block) and type(body[0]).__name__ in PREPROCESSING:
        head.append(body.pop(0))
    preprocessing = _preprocessing(head, input_shape, source)
    try:
        model = build(loaded.name, spec(body, layer_table), data=Shape(input_shape, classes))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    weights = from_layers(model, {name: layer.get_weights() for (name, _), layer in zip(model.layers, layers(body))},
                          source)
    pixels = np.random.default_rng(0).integers(0, 256, (PROBE_ROWS, *input_shape)).astype(np.float32)
    probe = applied(pixels, preprocessing)
    theirs = np.asarray(loaded(pixels if head else probe, training=False))
    logits, _ = apply(model, weights.params, weights.state, probe, False)
    ours = np.asarray(jax.nn.softmax(logits) if model.graph[-1].spec.get("activation") == "softmax" else logits)
    if not np.allclose(ours, theirs, atol=PROBE_TOLERANCE, rtol=0):
        raise ConfigError(f"{source}: normlab's {model.name} computes something else than the file's Keras model "
                          f"(a layer setting normlab does not read); max difference {np.abs(ours - theirs).max():.3g}")
    return weights, preprocessing

