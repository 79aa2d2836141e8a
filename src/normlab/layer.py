"""The layer protocol, below both ``nn/`` and ``norms/``: a Keras class name and two pure functions (stax-style).

``init(key, in_shape) -> (params, state, out_shape)``: shapes exclude the batch axis, so a layer learns its
input size from the layer before it and nobody writes ``dense(784, 300)`` by hand. params are trained; state
(e.g. BN moving statistics) is carried, not trained.
``apply(params, state, x, train, mask=None) -> (y, state)``: ``mask`` marks the real rows of a padded batch;
only layers that mix rows (batch norm) look at it. A ``random`` layer (dropout) also takes ``key=``, its draw in
training: ``nn.models.outputs`` folds the step's key with the layer's index, and gives no other layer a key.

A layer's options are the keyword parameters of its builder annotated with one of the option types below;
``nn.spec`` checks a TOML table against them, so a new kind declares its options once, in its signature.
"""

from typing import Annotated, Any, Callable, NamedTuple

from normlab.errors import ConfigError


class Layer(NamedTuple):
    kind: str  # the Keras class name: shown by `normlab summary`, and the class a Keras mirror instantiates
    init: Callable[[Any, tuple], tuple[dict, dict, tuple]]
    apply: Callable[..., tuple[Any, dict]]
    stepped: tuple[str, ...] = ()  # params passed as is to ``engine.gemm.matmul``, which may take their SGD step
    merges: bool = False  # takes several inputs (a block's branches): ``init`` gets their shapes, ``apply`` a tuple
    random: bool = False  # draws in training: ``apply`` takes ``key=`` (None at inference)


class Folding(NamedTuple):
    """A kind's part in folding batch norm for inference (``nn.fold``).

    ``"affine"``: at inference a fixed map ``x s + t`` of its moving statistics (``fold.inference_affine``), which a
    linear neighbour can absorb; ``"linear"``: a kernel and bias that absorb one, at their output if the layer has
    no activation, at their input if ``takes_input(spec, in_channels, affine_channels)``; ``"reorder"``: only
    reorders features (a flatten), so an affine map passes through it."""
    role: str
    takes_input: Callable[[dict, int, int], bool] = lambda spec, in_channels, affine_channels: False


class Kind(NamedTuple):
    """Everything normlab knows of one layer kind, declared beside its builder; ``nn.registry`` collects them.

    Options are the builder's annotated keyword parameters (``nn.spec``). The translations take the framework
    they build with as an argument, so declaring them imports nothing heavy:

    * ``keras(options) -> (Keras class, keyword arguments)``; None: the layer's class with its options as they
      are. ``keras_class``/``from_keras``: a Keras file's layer of that class reads back as this kind when
      ``from_keras(config)`` returns the table entries beyond the common options (None: not this kind).
    * ``torch(nn, options, in_shape, last) -> modules``; ``onnx(graph, site, x) -> output``. None: no mirror, or
      no ONNX node; either raises ``interop.frameworks.Unsupported`` saying why.
    * ``folding``: its part in folding batch norm (``Folding``); ``batch_statistics(spec)``: the spec whose
      training-mode state update is exactly the batch's statistics (``diagnose.gap``), for kinds with moving ones.
    * ``split(options, axis_name, sync) -> Layer``: the layer when a batch is split over a device axis (it sums
      or gathers its statistics there); ``splits`` False: it has no data-parallel form.
    * ``study_bn``: a study's ``bn_momentum`` and ``bn_epsilon`` are its defaults; ``concrete(options,
      out_shape)``: its options as another framework takes them (a reshape's wildcards resolved).
    * ``conventions``: option defaults per ``convention`` option (``nn.spec``); ``batch_limited(spec)``: its
      training step is undefined at some batch sizes (``models.check_batch``); ``workspace(spec, in, out)``:
      values per example it holds beside its output (``memory``).
    """
    build: Callable[..., Layer]
    keras: Callable[[dict], tuple[str, dict]] | None = None
    keras_class: str | None = None
    from_keras: Callable[[dict], dict | None] = lambda config: {}
    torch: Callable | None = None
    onnx: Callable | None = None
    folding: Folding | None = None
    batch_statistics: Callable[[dict], dict] | None = None
    split: Callable[..., Layer] | None = None
    splits: bool = True
    study_bn: bool = False
    concrete: Callable[[dict, tuple], dict] | None = None
    conventions: dict | None = None
    batch_limited: Callable[[dict], bool] | None = None
    workspace: Callable[[dict, tuple, tuple], int] | None = None


def stateless(kind: str, fn: Callable, out_shape: Callable[[tuple], tuple] = lambda shape: shape) -> Layer:
    """A layer with no params and no state, e.g. an activation."""
    return Layer(kind, lambda key, in_shape: ({}, {}, out_shape(in_shape)),
                 lambda params, state, x, train, mask=None: (fn(x), state))


class Option(NamedTuple):
    """How one option's value is checked: ``accepts(value)`` and the words an error shows."""
    expected: str
    accepts: Callable[[Any], bool]


def _real(value) -> bool:
    """An int or a float, not a bool: NaN and inf then fail the range each option checks, and a huge int compares
    exactly there (``math.isfinite`` of an int beyond a float's range raises OverflowError)."""
    return type(value) in (int, float)


def choice(*names) -> Option:
    return Option(f"one of {', '.join(map(repr, names))}", lambda v: isinstance(v, str) and v in names)


MAX_UNITS = 1 << 20


def _count(v) -> bool:
    return type(v) is int and 1 <= v <= MAX_UNITS


Units = Annotated[int, Option(f"an int in 1..{MAX_UNITS:,}", _count)]
Flag = Annotated[bool, Option("true or false", lambda v: type(v) is bool)]
Fraction = Annotated[float, Option("a number in [0, 1)", lambda v: _real(v) and 0 <= v < 1)]
FLOAT32_MAX = 3.4028234663852886e38  # training runs in float32: a larger value would become inf
Positive = Annotated[float, Option("a number > 0 within float32", lambda v: _real(v) and 0 < v <= FLOAT32_MAX)]
Real = Annotated[float, Option("a number within float32", lambda v: _real(v) and abs(v) <= FLOAT32_MAX)]
NonNegative = Annotated[float, Option("a number >= 0 within float32", lambda v: _real(v) and 0 <= v <= FLOAT32_MAX)]


# A window's size or stride (conv2d, max_pool2d): one int for both axes, or [height, width], as Keras takes them.
_WINDOW = Option(f"an int in 1..{MAX_UNITS:,} or a list [height, width] of two",
                 lambda v: _count(v) or isinstance(v, list) and len(v) == 2 and all(map(_count, v)))
Window = Annotated[int | list, _WINDOW]
MaybeWindow = Annotated[int | list | None, Option(f"{_WINDOW.expected} (or left out)",
                                                  lambda v: v is None or _WINDOW.accepts(v))]
# A shape without the batch axis (reshape's target_shape): 0 copies the input's size there, -1 takes what is left.
Shape = Annotated[list, Option(f"a list of 1 to 3 ints in 1..{MAX_UNITS:,}, 0 (the input's size there) or -1 (the "
                               f"rest, once)", lambda v: isinstance(v, list) and 1 <= len(v) <= 3 and all(
                                   _count(n) or (type(n) is int and n in (0, -1)) for n in v) and v.count(-1) <= 1)]


def need_flat(kind: str, in_shape: tuple) -> int:
    """The feature count of a flat input; a kind that needs one says so in terms of the model's layers."""
    if len(in_shape) != 1:
        raise ConfigError(f"{kind} needs a flat input, got shape {in_shape}; put {{kind = \"flatten\"}} before it")
    return in_shape[0]


def need_image(kind: str, in_shape: tuple) -> tuple[int, int, int]:
    """(height, width, channels) of an image input (NHWC without the batch); a flat one is reshaped first."""
    if len(in_shape) != 3:
        raise ConfigError(f"{kind} needs an image input (height, width, channels), got shape {in_shape}; put "
                          f"{{kind = \"reshape\", target_shape = [0, 0, -1]}} first (grayscale images have no "
                          f"channel axis)")
    return in_shape
