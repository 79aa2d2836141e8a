"""ONNX export: every preset, and a model with every kind and option that changes the graph, run by onnxruntime
and compared with normlab's own inference (softmax of its logits), with non-trivial norm weights and statistics
(on the model's own input: ``preprocessing.NONE``); the preprocessing nodes on raw pixels, against NumPy float64;
then the graph's declared interface, the file, and the one-line errors.

Kept fast for 2 shared cores: weights are drawn with NumPy (``models.init`` ran its initializers op by op, 28 s
for the presets under load), and normlab's forward pass is jitted once per model, at the larger batch only (all
presets: 11 s, against 22 s op by op). Batch 1 is the first row of the batch of 1000: normlab's inference treats
rows independently, and ONNX's batch-1 run is a second shape on the same session.
"""

import sys

import jax
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from conftest import preset_data  # noqa: E402
from normlab.errors import ConfigError  # noqa: E402
from normlab.interop import onnx_export, onnx_graph  # noqa: E402
from normlab.interop.onnx_export import to_onnx, write_onnx  # noqa: E402
from normlab.interop.preprocessing import NONE  # noqa: E402
from normlab.data.dataset import Shape  # noqa: E402
from normlab.nn import models  # noqa: E402
from normlab.nn.activations import FUNCTIONS  # noqa: E402
from normlab.nn.registry import KINDS  # noqa: E402

TOLERANCE = 1e-5
WEIGHTS = {  # name -> (rng, shape) -> values: signs, scales and offsets far from BN's identity init
    "kernel": lambda rng, shape: rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape),  # 1 / sqrt(fan-in)
    "gamma": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape),
    "scale": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "moving_variance": lambda rng, shape: rng.uniform(0.25, 4.0, shape),
}
# Every kind, and the options that change the graph: "same" padding with an odd total (the extra pixel after) in
# conv2d and max_pool2d, a non-square kernel, strides per axis, overlapping windows, norms over images and flat
# inputs, gamma or beta alone, a softmax mid-model over an image's channels, the inference-only kinds.
EVERY_KIND = [
    {"kind": "reshape", "target_shape": [28, 28, 1]},
    {"kind": "max_pool2d", "pool_size": 3, "strides": 2, "padding": "same"},  # 28 -> 14, pads 0 before, 1 after
    {"kind": "batch_norm", "convention": "pytorch", "center": False},
    {"kind": "conv2d", "filters": 6, "kernel_size": [3, 2], "strides": 2, "padding": "same", "activation": "elu"},
    {"kind": "covariate_noise"},
    {"kind": "layer_norm", "scale": False},
    {"kind": "activation", "activation": "selu"},
    {"kind": "conv2d", "filters": 4, "kernel_size": 2, "strides": [1, 2], "activation": "gelu"},
    {"kind": "group_norm", "groups": 2},
    {"kind": "rms_norm"},
    {"kind": "activation", "activation": "softmax"},
    {"kind": "max_pool2d", "strides": 1},
    {"kind": "flatten"},
    {"kind": "batch_renorm", "warmup_steps": 5, "center": False},
    {"kind": "dense", "units": 24, "activation": "swish"},
    {"kind": "ghost_batch_norm", "virtual_batch_size": 4, "scale": False},
    {"kind": "leaky_relu", "negative_slope": 0.1},
    {"kind": "group_norm", "groups": 3},
    {"kind": "dense", "units": 16, "activation": "tanh", "use_bias": False},
    {"kind": "activation", "activation": "leaky_relu"},
    {"kind": "dense", "units": 12, "activation": "sigmoid"},
    {"kind": "batch_norm", "momentum": 0.9, "epsilon": 0.5},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]


def offset(rng, shape) -> np.ndarray:
    """Any other weight: beta, a bias, a moving mean, renorm's statistics."""
    return rng.normal(0.0, 0.5, shape)


def weights(model, seed: int = 0):
    """Params and state drawn with NumPy (no JAX initializer to compile) in the shapes ``models.abstract`` gives;
    integer state (a PRNG key, a step counter) is zeros: inference ignores it."""
    rng = np.random.default_rng(seed)

    def draw(key: str, leaf) -> np.ndarray:
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        return np.float32(WEIGHTS.get(key, offset)(rng, leaf.shape))

    params, state, _ = models.abstract(model)
    return [{layer: {key: draw(key, leaf) for key, leaf in tree[layer].items()} for layer in tree}
            for tree in (params, state)]


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, 28, 28)).astype(np.float32)


def normlab_probabilities(model, params, state, x) -> np.ndarray:
    forward = jax.jit(lambda params, state, x: jax.nn.softmax(models.apply(model, params, state, x, False)[0]))
    return np.asarray(forward(params, state, x))


def session(proto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(ort_session, x) -> np.ndarray:
    return ort_session.run(["probabilities"], {"images": x})[0]


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)


# The presets for 28x28 images; the ResNets take CIFAR's 32x32x3 (tests/nn/test_resnets.py exports them).
@pytest.mark.parametrize("name", [name for name in models.presets() if preset_data(name) is None])
def test_every_preset_matches_normlab_at_batch_1_and_1000(name):
    model = models.preset(name)
    params, state = weights(model)
    x = images(1000)
    expected = normlab_probabilities(model, params, state, x)
    assert expected.max(axis=1).mean() < 0.99  # not saturated: the probabilities say something about the logits
    proto = to_onnx(model, params, state, preprocessing=NONE)
    onnx.checker.check_model(proto, full_check=True)
    ort = session(proto)
    assert_close(run(ort, x[:1]), expected[:1])
    assert_close(run(ort, x), expected)


@pytest.fixture(scope="module")
def every_kind():
    """The model, its weights, inputs and normlab's probabilities. The inputs are negative (pixels - 1), so a zero
    pad would win the max of the first pool's border windows."""
    model = models.build("every-kind", EVERY_KIND)
    params, state = weights(model, seed=1)
    x = images(37, seed=1) - 1.0
    return model, params, state, x, normlab_probabilities(model, params, state, x)


@pytest.mark.parametrize("opset", [onnx_export.OPSET, onnx_export.MAX_OPSET])
def test_every_kind_matches_normlab_on_one_session_at_two_batch_sizes(every_kind, opset):
    model, params, state, x, expected = every_kind
    proto = to_onnx(model, params, state, opset, NONE)
    onnx.checker.check_model(proto, full_check=True)
    assert [entry.version for entry in proto.opset_import] == [opset]
    ort = session(proto)
    assert_close(run(ort, x[:1]), expected[:1])
    assert_close(run(ort, x), expected)


@pytest.mark.parametrize("image, preprocessing", [
    ((28, 28), {"scale": 1 / 255, "mean": None, "std": None}),  # the default: a uint8 run without normalization
    ((28, 28), {"scale": 1 / 255, "mean": [0.2860], "std": [0.3530]}),
    ((6, 5, 3), {"scale": 1 / 255, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}),
    ((6, 5, 3), {"scale": 1.0, "mean": [-2.0, 0.0, 3.0], "std": [0.5, 1.0, 4.0]}),
])
def test_the_graph_takes_raw_pixels_and_preprocesses_them_per_channel(image, preprocessing):
    """onnxruntime on the pixels as stored (uint8, cast to float32) gives normlab's probabilities on the pixels
    preprocessed in float64; pixels already / 255 give something else."""
    layers = [{"kind": "conv2d", "filters": 3, "kernel_size": 2}] if len(image) == 3 else []
    model = models.build("raw", [*layers, {"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "softmax"}],
                         data=Shape(image, 10))
    params, state = weights(model)
    raw = np.random.default_rng(2).integers(0, 256, (50, *image)).astype(np.uint8)
    x = raw * preprocessing["scale"]
    if preprocessing["mean"] is not None:
        x = (x - np.asarray(preprocessing["mean"])) / np.asarray(preprocessing["std"])
    expected = normlab_probabilities(model, params, state, x.astype(np.float32))
    proto = to_onnx(model, params, state, **({} if preprocessing["mean"] is None else {"preprocessing": preprocessing}))
    onnx.checker.check_model(proto, full_check=True)
    ort = session(proto)
    assert_close(run(ort, raw.astype(np.float32)), expected)
    assert np.abs(run(ort, raw.astype(np.float32) / 255) - expected).max() > 0.01


def test_a_preprocessing_that_does_not_fit_the_image_is_refused():
    model = models.preset("baseline")
    params, state = weights(model)
    with pytest.raises(ConfigError, match=r"ONNX export: the preprocessing's mean and std must be lists of 1 finite"):
        to_onnx(model, params, state, preprocessing={"scale": 1.0, "mean": [0.5, 0.5, 0.5], "std": [1.0] * 3})


def test_the_interface_is_images_in_probabilities_out_with_a_dynamic_batch(every_kind):
    model, params, state, _, _ = every_kind
    proto = to_onnx(model, params, state)
    [images_in], [probabilities_out] = proto.graph.input, proto.graph.output
    for value, name, dims in ((images_in, "images", [28, 28]), (probabilities_out, "probabilities", [10])):
        shape = value.type.tensor_type.shape.dim
        assert value.name == name and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert shape[0].dim_param == "batch" and [d.dim_value for d in shape[1:]] == dims
    assert proto.ir_version == 4  # the lowest that carries opset 9: older runtimes load it
    floats = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert {t.name for t in floats} >= {"dense/kernel", "dense/bias", "conv2d/kernel", "rms_normalization/scale"}
    assert onnx.numpy_helper.to_array(next(t for t in floats if t.name == "dense/kernel")).shape == (40, 24)
    first = proto.graph.node[0]  # the raw pixels, scaled by float32(1 / 255): the default preprocessing
    assert first.op_type == "Mul" and first.input[0] == "images"
    assert onnx.numpy_helper.to_array(next(t for t in floats if t.name == first.input[1])) == np.float32(1 / 255)


def test_write_onnx_writes_the_model_and_no_temp_file(every_kind, tmp_path):
    model, params, state, _, _ = every_kind
    path = tmp_path / "model.onnx"
    write_onnx(model, params, state, path)
    assert path.read_bytes() == to_onnx(model, params, state).SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_every_kind_and_activation_has_a_translation():
    assert all(kind.onnx for kind in KINDS.values())
    assert set(onnx_graph.ACTIVATIONS) == set(FUNCTIONS)


def test_a_kind_without_translation_names_the_layer_and_kind(monkeypatch):
    monkeypatch.setitem(KINDS, "rms_norm", KINDS["rms_norm"]._replace(onnx=None))
    model = models.preset("rms-after")
    params, state = weights(model)
    with pytest.raises(ConfigError, match=r"layer rms_normalization \(rms_norm\) has no ONNX translation"):
        to_onnx(model, params, state)


@pytest.mark.parametrize("opset", [8, 18, 9.0])
def test_an_opset_outside_the_supported_range_is_refused(opset):
    model = models.preset("baseline")
    params, state = weights(model)
    with pytest.raises(ConfigError, match=r"opset must be an int in 9\.\.17"):
        to_onnx(model, params, state, opset)


def test_without_the_onnx_extra_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    model = models.preset("baseline")
    params, state = weights(model)
    with pytest.raises(ConfigError, match=r"pip install 'normlab\[onnx\]'"):
        to_onnx(model, params, state)
