"""``.keras`` files, written and read with Keras 3 on the JAX backend (no TensorFlow).

Out: the model's Keras mirror (``interop.mirror``, the one that the bench and the parity tests train) with normlab's
weights set in Keras' order. In: each Keras layer's class and config become a normlab layer table (the option
names are Keras' already), the model is built like any study's, the weights placed in Keras' order, and then
normlab's predictions on a probe batch must match Keras' own: a setting normlab does not read (a regularizer is
harmless, a dilation is not) shows up there and is refused, instead of silently computing something else.
"""

import os
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np

from normlab.atomic import replacing_by_name
from normlab.interop.mirror import Unsupported, keras_model
from normlab.errors import ConfigError, shown
from normlab.files import MAX_DEPTH, display, nested_deeper, one_line
from normlab.interop.weights import MAX_FILE_BYTES, Weights, from_ordered, ordered
from normlab.nn import spec as specs
from normlab.data.dataset import Shape
from normlab.nn.models import MAX_SIDE, apply, build
from normlab.nn.summary import describe

KINDS = {"Flatten": "flatten", "Dense": "dense", "Conv2D": "conv2d", "MaxPooling2D": "max_pool2d",
         "Reshape": "reshape", "Activation": "activation", "LeakyReLU": "leaky_relu",
         "BatchNormalization": "batch_norm", "LayerNormalization": "layer_norm", "GroupNormalization": "group_norm",
         "RMSNormalization": "rms_norm"}
PROBE_ROWS = 16
PROBE_TOLERANCE = 1e-4  # probabilities; both sides compute in float32 with XLA
REASON_CHARS = 1000  # of Keras' error: its safe-mode refusal (363 characters) whole, a dump of a whole config cut
MARKER = b"normlab model file (normlab export)"  # the zip comment of a .keras file normlab wrote


def load_keras():
    """Keras on the JAX backend (unless the process already imported it otherwise)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    try:
        import keras
    except ImportError:
        raise ConfigError(".keras files need Keras 3: pip install keras") from None
    return keras


def write_keras(weights: Weights, path: Path) -> None:
    """Keras writes the zip itself, into a private folder beside ``path`` (``atomic.replacing_by_name``); its
    comment, which every zip reader skips, marks it as normlab's (``export_target``)."""
    k = load_keras()
    try:
        model = keras_model(k, describe(weights.model))
    except Unsupported as error:
        raise ConfigError(f"model {weights.model.name} cannot be a .keras file: {error}") from None
    model.set_weights([array for _, array in ordered(weights)])
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
    kind = KINDS.get(name)
    if name == "BatchNormalization" and config.get("renorm"):
        kind = "batch_renorm"
    if kind is None:
        raise ConfigError(f"layer {shown(layer.name)} is a Keras {name}, which normlab has no kind for; it reads "
                          f"{', '.join(KINDS)}")
    if nested_deeper(config, MAX_DEPTH):  # ``_plain`` and the option checks recurse into the values
        raise ConfigError(f"layer {shown(layer.name)}: its config is nested more than {MAX_DEPTH} levels deep")
    table = {"kind": kind}
    for option, (check, _) in specs.options(kind).items():
        value = _plain(config.get(option))
        if option == "kernel_initializer":
            value = _initializer(value)
        if value is not None and check.accepts(value):
            table[option] = value
    if kind == "batch_renorm":  # Keras checks little of it: the values go as they are to the spec's checks
        clipping = config.get("renorm_clipping") or {}
        if not isinstance(clipping, dict):
            raise ConfigError(f"layer {shown(layer.name)}: renorm_clipping must be a dict of rmax, rmin and dmax, "
                              f"got {shown(clipping)}")
        table |= {k: clipping[k] for k in ("rmax", "dmax") if clipping.get(k) is not None}
    return table


def _reason(error: Exception) -> str:
    """Keras' error as one line: whole up to ``REASON_CHARS``, else its start and end (where a cause often is)."""
    text = one_line(" ".join(str(error).split()))
    if len(text) > REASON_CHARS:
        text = f"{text[:REASON_CHARS * 2 // 3]} ... {text[-REASON_CHARS // 3:]}"
    return f"{type(error).__name__}: {text}"


def read_keras(path: Path) -> Weights:
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
        model = build(loaded.name, [layer_table(layer) for layer in loaded.layers],
                      data=Shape(input_shape, classes))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    weights = from_ordered(model, loaded.get_weights(), source)
    probe = np.random.default_rng(0).random((PROBE_ROWS, *input_shape), dtype=np.float32)
    theirs = np.asarray(loaded(probe, training=False))
    logits, _ = apply(model, weights.params, weights.state, probe, False)
    ours = np.asarray(jax.nn.softmax(logits) if model.spec[-1].get("activation") == "softmax" else logits)
    if not np.allclose(ours, theirs, atol=PROBE_TOLERANCE, rtol=0):
        raise ConfigError(f"{source}: normlab's {model.name} computes something else than the file's Keras model "
                          f"(a layer setting normlab does not read); max difference {np.abs(ours - theirs).max():.3g}")
    return weights

