"""skip_init against float64 NumPy (y = a x; dx = a dy; da = sum(x dy), so a branch that starts silent at a = 0
still trains), its one parameter, its PyTorch and ONNX translations, the Keras mirror's refusal, and its option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peers
from normlab.data.dataset import Shape
from normlab.errors import ConfigError
from normlab.interop import mirror
from normlab.nn.models import build, init, outputs
from normlab.nn.registry import KINDS
from normlab.nn.skip_init import skip_init
from normlab.nn.summary import describe, layer_rows, param_counts, variables


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("start", [0.0, -0.7])
def test_forward_and_gradients_match_numpy(start):
    rng = np.random.default_rng(1)
    x, dy = rng.normal(2.0, 3.0, (4, 5, 3, 2)), rng.normal(size=(4, 5, 3, 2))
    layer = skip_init(start)
    params, state, out_shape = layer.init(jax.random.key(0), (5, 3, 2))
    assert out_shape == (5, 3, 2) and state == {} and params["scale"].shape == () and params["scale"] == start
    y, vjp = jax.vjp(lambda p, x32: layer.apply(p, state, x32, True)[0], params, jnp.float32(x))
    dparams, dx = vjp(jnp.float32(dy))
    close(y, start * x)
    close(dx, start * dy)
    np.testing.assert_allclose(float(dparams["scale"]), np.sum(x * dy), rtol=1e-5)


BLOCK = [{"kind": "conv2d", "filters": 3, "padding": "same"},
         {"kind": "residual", "layers": [{"kind": "conv2d", "filters": 3, "padding": "same", "activation": "relu"},
                                         {"kind": "conv2d", "filters": 3, "padding": "same"},
                                         {"kind": "skip_init"}]},
         {"kind": "global_avg_pool2d"}, {"kind": "dense", "units": 10, "activation": "softmax"}]


def block_model():
    return build("skip", BLOCK, data=Shape((6, 5, 2), 10))


def test_its_scalar_is_one_trainable_parameter_named_scale():
    model = block_model()
    plain = build("plain", [{**BLOCK[1], "layers": BLOCK[1]["layers"][:2]} if i == 1 else table
                            for i, table in enumerate(BLOCK)], data=Shape((6, 5, 2), 10))
    assert [(row.name, row.params) for row in layer_rows(model) if row.kind == "SkipInit"] == [("skip_init", 1)]
    assert param_counts(model) == {**param_counts(plain), "total": param_counts(plain)["total"] + 1,
                                   "trainable": param_counts(plain)["trainable"] + 1}
    assert [(v.path, v.shape, v.trainable) for v in variables(model) if v.path.startswith("skip")] == [
        ("skip_init/scale", (), True)]


def test_at_zero_the_block_is_its_shortcut():
    """De & Smith's point: each block starts as the identity, whatever its branch computes."""
    model = block_model()
    params, state = init(model, jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 2)).astype(np.float32)
    values, _ = outputs(model, params, state, x, False)
    names = [name for name, _ in model.layers]
    first_conv, block_relu = values[names.index("conv2d")], values[names.index("activation")]
    np.testing.assert_array_equal(np.asarray(block_relu), np.maximum(np.asarray(first_conv), 0))


def test_torch_translation_is_one_scalar_parameter_starting_at_init():
    torch = peers.torch()
    rng = np.random.default_rng(2)
    x, dy = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    modules = KINDS["skip_init"].torch(torch.nn, {"init": 0.25}, [4, 2], False)
    [(name, scale)] = list(torch.nn.Sequential(*modules).named_parameters())
    assert name.endswith("scale") and tuple(scale.shape) == () and scale.dtype == torch.float32 and scale == 0.25
    y, dx = peers.torch_run(modules, x, dy)
    close(y, 0.25 * x)
    close(dx, 0.25 * dy)
    np.testing.assert_allclose(float(scale.grad), np.sum(np.float32(x) * np.float32(dy)), rtol=1e-5)


def test_onnx_export_multiplies_the_branch_by_the_scalar():
    model = block_model()
    params, state = init(model, jax.random.key(0))
    params["skip_init"]["scale"] = jnp.float32(-1.5)  # not 0: the branch must show in the output
    x = np.random.default_rng(3).normal(size=(4, 6, 5, 2)).astype(np.float32)
    theirs, ours = peers.onnx_probabilities(model, params, state, x)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)


def test_the_keras_mirror_says_keras_has_no_such_layer():
    with pytest.raises(mirror.Unsupported, match="Keras has no layer that multiplies by one learnable scalar"):
        mirror.keras_layers(describe(block_model()))


@pytest.mark.parametrize("value", [True, "0", float("nan"), 1e39, [0.0]])
def test_a_bad_init_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError, match=r"\(skip_init\): init must be a number within float32") as error:
        build("m", [{"kind": "flatten"}, {"kind": "skip_init", "init": value}, {"kind": "dense", "units": 10}])
    assert "\n" not in str(error.value)


def test_init_defaults_to_zero_and_takes_an_int():
    model = build("m", [{"kind": "flatten"}, {"kind": "skip_init", "init": 1}, {"kind": "dense", "units": 10}])
    assert model.spec[1] == {"kind": "skip_init", "init": 1.0} and type(model.spec[1]["init"]) is float
    assert build("m", [{"kind": "flatten"}, {"kind": "skip_init"}, {"kind": "dense", "units": 10}]).spec[1] == {
        "kind": "skip_init", "init": 0.0}
