"""A model as a notebook user meets it: Keras' ``summary()``, ``variables`` and ``weights``, and ``predict`` on raw
pixels. Made from a preset's or study model's name, from layer tables or from a model file (``normlab.model``), or
out of a run (``Results.model``); ``normlab.train`` and ``normlab.reproduce`` take one wherever a preset's name goes
(``placed``), and start from its weights when it has some (``starting``)."""

import dataclasses
import functools
import html
import os
from pathlib import Path

import numpy as np

from normlab.api.command import option_name, public
from normlab.errors import ConfigError, shown
from normlab.files import display
from normlab.interop.weights import Weights, fitted, ordered
from normlab.nn import models
from normlab.nn.summary import Variable, layer_rows, param_counts, variables


class Summary:
    """Keras' ``model.summary()`` table: printed as text, shown as HTML in a notebook. A graph's, as a functional
    model's, starts with its input and names the layers each one reads ("Connected to")."""

    def __init__(self, model: models.Model):
        self.name = model.name
        connected = not model.is_sequential()
        self.header = ("Layer (type)", "Output Shape", "Param #") + (("Connected to",) if connected else ())
        self.rows = [(f"{row.name} ({row.kind})", str(row.output_shape), f"{row.params:,}")
                     + ((", ".join(f"{name}[0][0]" for name in row.inputs) or "-",) if connected else ())
                     for row in layer_rows(model)]
        self.counts = param_counts(model)

    def totals(self) -> list[str]:
        return [f"Total params: {self.counts['total']:,}", f"Trainable params: {self.counts['trainable']:,}",
                f"Non-trainable params: {self.counts['non_trainable']:,}"]

    def __str__(self) -> str:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        line = lambda r: "  ".join(f"{cell:>{width}}" if i == 2 else f"{cell:<{width}}"  # noqa: E731
                                   for i, (cell, width) in enumerate(zip(r, widths))).rstrip()
        return "\n".join([f'Model: "{self.name}"', line(self.header), *map(line, self.rows), *self.totals()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{h}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td style='text-align:right'>{esc(cell)}</td>" if i == 2 else
                                        f"<td>{esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
                       for row in self.rows)
        return (f"<p>Model: &quot;{esc(self.name)}&quot;</p><table><tr>{head}</tr>{body}</table>"
                f"<p>{'<br>'.join(self.totals())}</p>")


class Model:
    """A preset, a study's model, layer tables or a model file: its layers, Keras-style summary and variables, and,
    once it has weights (``init``, a model file, ``Results.model``), ``weights`` and ``predict``.

    >>> m = normlab.model("bn-after")
    >>> m.counts
    {'total': 271346, 'trainable': 268978, 'non_trainable': 2368}
    >>> [(v.path, v.trainable) for v in m.variables()][:4]
    [('batch_normalization/gamma', True), ('batch_normalization/beta', True), \
('batch_normalization/moving_mean', False), ('batch_normalization/moving_variance', False)]
    """

    def __init__(self, built: models.Model, weights: Weights | None = None, preprocessing: dict | None = None,
                 tables: list[dict] | None = None):
        self.built = built
        self._weights = weights  # of ``built``, or None: a model as data, which training draws weights for
        self._preprocessing = preprocessing
        self._tables = list(built.spec) if tables is None else tables  # what a study's [models.NAME] holds

    @property
    def name(self) -> str:
        """The preset's or study model's name: its run folders and TensorBoard runs are named after it."""
        return self.built.name

    @property
    def spec(self) -> list[dict]:
        """Every layer's kind and options, defaults filled in: the model as data (a study's ``[models.NAME]``)."""
        return [dict(layer) for layer in self.built.spec]

    @property
    def layers(self) -> list[tuple[str, str]]:
        """(layer name, Keras class) in order, named as Keras names them."""
        return [(name, layer.kind) for name, layer in self.built.layers]

    @property
    def counts(self) -> dict[str, int]:
        """Total, trainable and non-trainable parameters, as Keras counts them."""
        return param_counts(self.built)

    @property
    def preprocessing(self) -> dict | None:
        """What ``predict`` does to raw pixels before the first layer, as the run that trained the weights did
        (``{"scale", "mean", "std"}``: x * scale, then (x - mean) / std per channel if normalized); None: as
        training's step takes images with ``normalize = "none"``, uint8 pixels / 255 and float ones as they are."""
        return None if self._preprocessing is None else dict(self._preprocessing)

    def summary(self) -> Summary:
        """Keras' table: each layer's output shape and parameters, then the totals.

        >>> print(normlab.model("baseline").summary())  # doctest: +ELLIPSIS
        Model: "baseline"
        ...
        Total params: 266,610
        Trainable params: 266,610
        Non-trainable params: 0
        """
        return Summary(self.built)

    def variables(self) -> list[Variable]:
        """Every variable as (path, shape, trainable), in Keras' order: kernel, bias, gamma, beta, moving stats."""
        return variables(self.built)

    def init(self, seed: int = 0) -> "Model":
        """This model with the weights training draws for ``seed``: what ``normlab.train(model, seed=seed)``
        starts from (``train.state.create``).

        >>> linear = normlab.model([{"kind": "flatten"}, {"kind": "dense", "units": "classes"}], name="linear")
        >>> [(name, array.shape, trainable) for name, array, trainable in linear.init(seed=0).weights]
        [('dense/kernel', (784, 10), True), ('dense/bias', (10,), True)]
        """
        import jax.numpy as jnp
        import optax
        from normlab.experiments.config import SEED_LIMIT
        from normlab.train.state import create
        if type(seed) is not int or not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seed must be an int in 0..{SEED_LIMIT - 1} (seeds are uint32), got {shown(seed)}")
        drawn = create(self.built, optax.identity(), jnp.uint32(seed))
        return Model(self.built, Weights(self.built, drawn.params, drawn.model_state), None, self._tables)

    @property
    def weights(self) -> list[tuple[str, np.ndarray, bool]]:
        """Every variable as (path, array, trainable), in Keras' order (``model.weights``, ``set_weights``)."""
        trainable = {v.path: v.trainable for v in variables(self.built)}
        return [(path, array, trainable[path]) for path, array in ordered(self._held("list"))]

    def predict(self, x, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities of raw pixels, as Keras' ``predict``: ``x`` a batch of images shaped like the
        dataset's (uint8, or float pixels in the same units) or one image; preprocessed as the weights were
        trained (``preprocessing``), in inference mode (batch norm's moving statistics), ``batch_size`` images at a
        time, then the softmax (the model computes logits: training folds the softmax into its loss).

        >>> import numpy as np
        >>> linear = normlab.model([{"kind": "flatten"}, {"kind": "dense", "units": "classes"}], name="linear")
        >>> probabilities = linear.init(seed=0).predict(np.zeros((2, 28, 28), np.uint8))
        >>> probabilities.shape, probabilities.sum(axis=1).round(5).tolist()
        ((2, 10), [1.0, 1.0])
        """
        weights = self._held("predict with")
        images, single = self._images(x)
        if type(batch_size) is not int or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {shown(batch_size)}")
        size = min(batch_size, len(images))
        out = []
        for start in range(0, len(images), size):  # one compiled shape: the last batch is padded, then cut
            batch = images[start:start + size]
            padded = np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
            out.append(np.asarray(self._forward(weights.params, weights.state, padded))[:len(batch)])
        probabilities = np.concatenate(out)
        return probabilities[0] if single else probabilities

    __call__ = predict

    def _held(self, doing: str) -> Weights:
        if self._weights is None:
            raise ConfigError(f"model {self.name} has no weights to {doing}: draw them with .init(seed), or take a "
                              f"trained model (normlab.load(folder).model(preset, seed), normlab.model(path))")
        return self._weights

    def _images(self, x) -> tuple[np.ndarray, bool]:
        """``x`` as a batch of images this model takes, and whether it was one image; else a one-line error."""
        image = tuple(self.built.data.image)
        try:
            array = np.asarray(x)
        except Exception:  # a ragged list, an object that is no array
            array = np.asarray(None)
        if array.dtype.kind == "f":
            with np.errstate(over="ignore"):  # beyond float32 is inf, refused below
                array = array.astype(np.float32)
        elif array.dtype != np.uint8:
            raise ConfigError(f"x must be images as a uint8 or float array, got {type(x).__name__} of dtype "
                              f"{array.dtype}")
        single = array.shape == image
        if not single and array.shape[1:] != image:
            raise ConfigError(f"x must be images of shape {image} (a batch (N, {', '.join(map(str, image))}), or "
                              f"one), got shape {array.shape}")
        if not array.size:
            raise ConfigError("x holds no image")
        if array.dtype == np.float32 and not np.isfinite(array).all():
            raise ConfigError("x holds pixels that are not finite (NaN or inf, or beyond float32)")
        return (array[None] if single else array), single

    @functools.cached_property
    def _forward(self):
        """``(params, state, images) -> probabilities``, jitted: the pixels as training's evaluation makes them
        (``train.step.make_chunk_sums``, ``api.files.test_scores``), the model, the softmax."""
        import jax
        from normlab.interop.preprocessing import relative
        from normlab.train.preprocess import pixels
        model, preprocessing = self.built, self._preprocessing

        def forward(params, state, images):
            # what is left to do after the step's own scaling (uint8 pixels / 255): a normalization, or nothing
            stats = None if preprocessing is None else relative(preprocessing,
                                                                1 / 255 if images.dtype == np.uint8 else 1.0)
            logits, _ = models.apply(model, params, state, pixels(images, stats), False)
            return jax.nn.softmax(logits)

        return jax.jit(forward)

    def folded(self) -> "Model":
        """The inference model with every batch norm folded into its neighbouring Dense/Conv2D where it can be
        (its weights too, if it has some).

        >>> normlab.model("bn-after").folded().counts
        {'total': 266610, 'trainable': 266610, 'non_trainable': 0}
        """
        from normlab.nn.fold import fold, folded
        if self._weights is None:
            return Model(folded(self.built))
        weights = Weights(*fold(*self._weights))
        return Model(weights.model, weights, self._preprocessing)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def __repr__(self) -> str:
        held = "" if self._weights is None else ", with weights"
        return f"<normlab.Model {self.name!r}: {len(self.layers)} layers, {self.counts['total']:,} params{held}>"


MODEL_FILES = (".keras", ".safetensors", ".onnx")  # a name ending so is a file's path (``interop.model_files``)


def is_model_file(source) -> bool:
    """Whether ``source`` names a model file rather than a preset: a path, a name ending in a model file's suffix, or
    one holding a ``/`` (preset names cannot)."""
    return isinstance(source, os.PathLike) or isinstance(source, str) and (source.endswith(MODEL_FILES)
                                                                          or "/" in source)


@public
def model(source=None, study=None, data=None, *, layers=None, name: str | None = None) -> Model:
    """A model: a preset (baseline, bn-after, bn-before, cnn-bn, ...) or a ``[models.NAME]`` of a study file, or
    ``layers``, a list of layer tables as a study's ``[models.NAME]`` holds them (also as ``source``), named
    ``name``; built with the study's settings (the seed study's by default) for ``data``'s images and classes (the
    study's dataset by default; a name, a path or arrays, as ``normlab.data`` takes them). Or the path of a model
    file (``.keras``, ``.safetensors``: ``normlab.export``'s, or Keras' own) with its weights and preprocessing,
    renamed ``name`` if given; or a ``Model``, renamed. A ``source`` ending in one of those suffixes, or holding a
    ``/``, is a path.

    >>> normlab.model("bn-before")
    <normlab.Model 'bn-before': 9 layers, 270,946 params>
    >>> normlab.model("bn-before", data="cifar10")
    <normlab.Model 'bn-before': 9 layers, 966,498 params>
    >>> normlab.model([{"kind": "flatten"}, {"kind": "batch_norm"},
    ...                {"kind": "dense", "units": "classes", "activation": "softmax"}], name="linear-bn")
    <normlab.Model 'linear-bn': 3 layers, 10,986 params>
    >>> path = normlab.export("runs/doc-train", format="safetensors", out="runs/doc-model.safetensors")
    >>> normlab.model(path)
    <normlab.Model 'bn-after': 7 layers, 271,346 params, with weights>
    """
    if isinstance(source, Model):
        return source if name is None else _renamed(source, name)
    if isinstance(source, list):
        source, layers = (None, source) if layers is None else (source, layers)
    if source is None and layers is None:
        source, name = name, None  # normlab.model(name="bn-after") is the preset
    if layers is not None:
        if source is not None:
            raise ConfigError("give a model's layers once: as the first argument or as layers, not both")
        return _from_layers(layers, "model" if name is None else name, study, data)
    if is_model_file(source):
        if study is not None or data is not None:
            raise ConfigError(f"{display(Path(source))}: a model file holds its model for its own images; give "
                              f"study and data to normlab.train")
        return _from_file(Path(source), name)
    if not isinstance(source, str):
        raise ConfigError(f"a model is a preset's or study model's name, a model file's path (.keras, "
                          f".safetensors), a list of layer tables or a normlab.Model, got {shown(source)}")
    from normlab.api.settings import study_config
    config = study_config(study, {"data": data})
    known = config.known_models()
    if name is None:
        return Model(config.model(source), tables=known.get(source))
    if source not in known:
        raise models.unknown(source, known)
    return _from_layers(known[source], name, config, None)


def _from_layers(layers, name, study, data) -> Model:
    """``layers`` named ``name``, checked and built as a study's ``[models.NAME]``."""
    import copy
    from normlab.api.settings import study_config, with_models
    models.check_name(name, option_name("name"))
    config = with_models(study_config(study, {"data": data}), {name: {"layers": layers}}, option_name("layers"))
    return Model(config.model(name), tables=copy.deepcopy(layers))


def _from_file(path: Path, name: str | None) -> Model:
    from normlab.interop.model_files import read
    if path.is_dir():
        raise ConfigError(f"{display(path)} is a folder, not a model file; a run's trained models are "
                          f"normlab.load(folder).model(preset, seed)")
    weights, preprocessing = read(path)
    found = Model(weights.model, weights, preprocessing)
    return found if name is None else _renamed(found, name)


def _renamed(model: Model, name: str) -> Model:
    """``model`` under another name: its layers, weights and preprocessing as they are."""
    built = models.build(models.check_name(name, option_name("name")), list(model.built.spec), data=model.built.data)
    weights = None if model._weights is None else Weights(built, model._weights.params, model._weights.state)
    return Model(built, weights, model._preprocessing, model._tables)


def _chosen(presets) -> list:
    return [presets] if isinstance(presets, Model) else list(presets) if isinstance(presets, (list, tuple)) else []


def placed(config, presets):
    """``presets`` (names and ``Model``s) as names, and ``config`` with the Models' layers among its models. A Model
    named like a preset or a model of the study is that one if its layers are (``weights.fitted``): one name, one
    model, in a run folder and its checkpoints."""
    from normlab.api.settings import with_models
    if not any(isinstance(item, Model) for item in _chosen(presets)):
        return config, presets
    names, added, known = [], {}, config.known_models()
    for item in _chosen(presets):
        if isinstance(item, Model):
            name = item.name
            if name in added and added[name]["layers"] != item._tables:
                raise ConfigError(f"{option_name('presets')}: two models are named {name}; rename one "
                                  f"(normlab.model(..., name=...))")
            if name in known and known[name] != item._tables:
                theirs = config.model(name)
                try:
                    fitted(Weights(item.built, {}, {}), theirs, f"model {name}")
                except ConfigError as error:
                    raise ConfigError(f"{option_name('presets')}: {error}; give yours another name "
                                      f"(normlab.model(..., name=...))") from None
            elif name not in known:
                added[name] = {"layers": item._tables}
        names.append(item.name if isinstance(item, Model) else item)
    return with_models(config, added, option_name("presets")), names


@dataclasses.dataclass(frozen=True)
class Start:
    """A Model's weights as the file a run starts from (its ``init_from``), in the run folder: workers read it,
    and the run's results.json names it."""
    path: Path
    model: Model

    def write(self, resume: bool) -> None:
        """The file, made once the run folder is claimed; resuming, the weights must be those it started from."""
        from normlab.interop.model_files import read
        from normlab.interop.preprocessing import UINT8
        from normlab.interop.safetensors_io import write_safetensors
        from normlab.train.checkpoint import digest
        weights = self.model._weights
        if resume and self.path.is_file():
            started, _ = read(self.path)
            if digest((started.params, started.state)) != digest((weights.params, weights.state)):
                raise ConfigError(f"{display(self.path.parent.parent)} started from other weights than model "
                                  f"{self.model.name}'s: resume it with the model it started from, or choose "
                                  f"another {option_name('out')}")
            return
        write_safetensors(weights, self.path, self.model._preprocessing or UINT8)


def starting(config, presets, out: Path, reinit: bool):
    """``config`` and the ``Start`` of a run of ``presets`` in ``out``: a Model with weights is trained from them
    (None: every seed draws its own, as with ``reinit``)."""
    weighted = [item for item in _chosen(presets) if isinstance(item, Model) and item._weights is not None]
    if reinit or not weighted:
        return config, None
    model = weighted[0]
    if len(config.presets) > 1:
        raise ConfigError(f"{option_name('presets')}: model {model.name} has weights to start from, and every model "
                          f"of a run starts from one init_from: train it alone, or draw fresh weights with "
                          f"reinit=True")
    if config.init_from is not None:
        raise ConfigError(f"init_from and model {model.name}'s weights both say what training starts from: give "
                          f"one of them, or reinit=True")
    if model.built.data != config.shape:
        raise ConfigError(f"model {model.name}'s weights take {model.built.data.image} images in "
                          f"{model.built.data.classes} classes; {config.data}'s are {config.shape.image} in "
                          f"{config.shape.classes}: give its own ({option_name('data', 'data=...')}), or reinit=True")
    if not model._weights.finite():
        raise ConfigError(f"model {model.name} holds weights that are not finite (NaN or inf): nothing to train "
                          f"from; reinit=True draws fresh ones")
    path = Path(out) / "init" / f"{model.name}.safetensors"
    return dataclasses.replace(config, init_from=str(path)), Start(path, model)
