"""normlab's own model file: every array of params and state as ``LAYER/VARIABLE`` in safetensors (plain arrays,
nothing executable), and the model spec and its preprocessing (``interop.preprocessing``) as JSON in the header,
so the file alone says what to build and what input it takes; a file without a preprocessing predates it (pixels
/ 255).

A file comes from anywhere: it is read with a size cap, its spec checked as a study's model is, and every array
must be exactly the one that model has (name, shape, dtype). A PRNG key (covariate noise) is its raw key data.
"""

import json
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy

from normlab.errors import ConfigError
from normlab.files import FileProblem, one_line, parse_json, read_bytes, write_bytes
from normlab.interop.preprocessing import UINT8, channels, checked
from normlab.interop.weights import MAX_FILE_BYTES, Weights
from normlab.nn.models import abstract, build
from normlab.train.checkpoint import is_key

FORMAT = "normlab-model-1"


def _leaves(weights: Weights) -> dict[str, np.ndarray]:
    return {f"{layer}/{name}": np.asarray(jax.random.key_data(v) if is_key(v) else v)
            for tree in (weights.params, weights.state) for layer, values in tree.items()
            for name, v in values.items()}


def write_safetensors(weights: Weights, path: Path, preprocessing: dict = UINT8) -> None:
    model = weights.model
    preprocessing = checked(preprocessing, "safetensors export", channels(model.data.image))
    header = {"format": FORMAT, "model": json.dumps({"name": model.name, "layers": list(model.spec),
                                                     "input_shape": list(model.data.image),
                                                     "classes": model.data.classes}),
              "preprocessing": json.dumps(preprocessing)}
    write_bytes(path, safetensors.numpy.save(_leaves(weights), metadata=header))


def read_safetensors(path: Path) -> tuple[Weights, dict]:
    """The file's model and weights, and the preprocessing its input takes."""
    source = one_line(path)
    try:
        blob = read_bytes(path, MAX_FILE_BYTES)
    except FileProblem as error:
        raise ConfigError(str(error)) from None
    try:
        size = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or size > len(blob) - 8:
            raise ValueError("truncated header")
        metadata = parse_json(blob[8:8 + size], "its header").get("__metadata__") or {}
        arrays = safetensors.numpy.load(blob)  # its parser holds the metadata to text values
    except Exception as error:  # the Rust parser raises its own type: any failure is a damaged or foreign file
        reason = error if isinstance(error, FileProblem) else f"{type(error).__name__}: {error}"
        raise ConfigError(f"{source}: not a safetensors file ({reason})") from None
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"{source}: not a normlab model file (written by `normlab export --format safetensors`)")
    try:
        spec = parse_json(metadata["model"], f"{source}: its model description")
        name, layers = spec["name"], spec["layers"]
        # files written before other datasets hold no shape: they were all Fashion-MNIST's, the default's
        data = (spec["input_shape"], spec["classes"]) if "input_shape" in spec or "classes" in spec else None
        preprocessing = (parse_json(metadata["preprocessing"], f"{source}: its preprocessing")
                         if "preprocessing" in metadata else UINT8)
    except FileProblem as error:
        raise ConfigError(str(error)) from None
    except (KeyError, TypeError):
        raise ConfigError(f"{source}: its model description is damaged") from None
    try:
        model = build(name, layers, data=data)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    preprocessing = checked(preprocessing, source, channels(model.data.image))
    params, state, _ = abstract(model)
    wanted = {f"{layer}/{name}" for tree in (params, state) for layer, values in tree.items() for name in values}
    if extra := sorted(set(arrays) - wanted):
        raise ConfigError(f"{source}: holds {extra[0]}, which its model does not have")
    return Weights(model, _tree(params, arrays, source), _tree(state, arrays, source)), preprocessing


def _tree(like: dict, arrays: dict, source: str) -> dict:
    """``like``'s layers and variables (shapes and dtypes) filled from ``arrays``, each matching exactly."""
    tree = {}
    for layer, values in like.items():
        tree[layer] = {}
        for name, leaf in values.items():
            key = f"{layer}/{name}"
            stored = jax.eval_shape(jax.random.key_data, leaf) if is_key(leaf) else leaf
            array = arrays.get(key)
            if array is None or array.shape != stored.shape or array.dtype != stored.dtype:
                got = "nothing" if array is None else f"{array.dtype}{list(array.shape)}"
                raise ConfigError(f"{source}: {key} must be {stored.dtype}{list(stored.shape)}, found {got}")
            tree[layer][name] = (jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf)) if is_key(leaf)
                                 else jax.numpy.asarray(array))
    return tree
