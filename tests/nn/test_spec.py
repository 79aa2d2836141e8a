"""Models as data: specs from TOML-like tables, checked with Keras' option names, built with their shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.nn.models import apply, build, init, preset
from normlab.nn.registry import KINDS
from normlab.nn.spec import check_layer, options
from normlab.nn.summary import param_counts

WIDE_BN = [
    {"kind": "flatten"},
    {"kind": "batch_norm"},
    {"kind": "dense", "units": 512, "activation": "relu"},
    {"kind": "batch_norm", "momentum": 0.9},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]


def test_wide_bn_counts_match_keras():
    """Keras' summary of this model: 412,234 total / 409,642 trainable / 2,592 non-trainable."""
    assert param_counts(build("wide-bn", WIDE_BN)) == {"total": 412_234, "trainable": 409_642,
                                                       "non_trainable": 2_592}


def test_defaults_fill_in_and_the_layer_value_wins():
    spec = build("wide-bn", WIDE_BN, {"batch_norm": {"momentum": 0.5}}).spec
    assert [s.get("momentum") for s in spec if s["kind"] == "batch_norm"] == [0.5, 0.9]
    assert spec[2] == {"kind": "dense", "units": 512, "activation": "relu", "use_bias": True,
                       "kernel_initializer": "glorot_uniform"}


@pytest.mark.parametrize("layers, message", [
    ([{"kind": "flaten"}], "unknown layer kind 'flaten'; did you mean 'flatten'?"),
    ([{"kind": "flatten"}, {"kind": "dense", "unit": 10}], "unknown option 'unit'; did you mean 'units'?"),
    ([{"kind": "flatten"}, {"kind": "dense"}], "needs units"),
    ([{"kind": "flatten"}, {"kind": "dense", "units": 0}], "units must be an int in 1.."),
    ([{"kind": "flatten"}, {"kind": "dense", "units": 10, "use_bias": 1}], "use_bias must be true or false"),
    ([{"kind": "flatten"}, {"kind": "batch_norm", "momentum": 1.0}, {"kind": "dense", "units": 10}],
     r"momentum must be a number in \[0, 1\)"),
    ([{"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "rleu"}], "activation must be one of"),
    ([{"kind": "dense", "units": 10}], 'needs a flat input, got shape \\(28, 28\\); put {kind = "flatten"}'),
    ([{"kind": "flatten"}, {"kind": "dense", "units": 7}], "outputs shape \\(7,\\), but the loss needs 10"),
    ([{"kind": "flatten"}, {"kind": "dense", "units": 1 << 20}, {"kind": "dense", "units": 10}], "parameters, more"),
    ([], "layers must be a list of 1 to"),
    ("dense", "layers must be a list"),
    ([["dense"]], "must be a table like"),
    ([{"kind": "flatten"}, {"kind": "covariate_noise", "max_std": -0.5}, {"kind": "dense", "units": 10}],
     r"layer 2 \(covariate_noise\): max_std must be a number >= 0 within float32, got -0.5"),
    ([{"kind": "flatten"}, {"kind": "covariate_noise", "max_mean": "1"}, {"kind": "dense", "units": 10}],
     "max_mean must be a number >= 0"),
    ([{"kind": "flatten"}, {"kind": "covariate_noise", "max_mean": float("inf")}, {"kind": "dense", "units": 10}],
     "max_mean must be a number >= 0"),
])
def test_bad_specs_are_one_line_config_errors(layers, message):
    with pytest.raises(ConfigError, match=message) as error:
        build("m", layers)
    assert "\n" not in str(error.value)


def test_every_kind_declares_checked_options_with_defaults_that_pass_them():
    for kind in KINDS:
        for name, (option, default) in options(kind).items():
            assert name != "units" or default is not None
            if default is None:  # derived: from the kind's convention (batch norm), or another option (strides)
                filled = check_layer({"kind": kind}, "t")[name]
                assert filled is None or option.accepts(filled), (kind, name)
            elif not isinstance(default, type):
                assert option.accepts(default), (kind, name)


def test_a_final_softmax_becomes_logits_and_a_hidden_one_is_applied():
    """The loss takes logits (log-softmax); a softmax inside the model must still be computed."""
    layers = [{"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "softmax"},
              {"kind": "dense", "units": 10, "activation": "softmax"}]
    model = build("two-softmax", layers)
    params, state = init(model, jax.random.key(0))
    x = np.random.default_rng(0).uniform(0, 1, (3, 28, 28))
    logits, _ = apply(model, params, state, jnp.float32(x), train=False)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    z = x.reshape(3, -1) @ p["dense"]["kernel"] + p["dense"]["bias"]
    hidden = np.exp(z - z.max(1, keepdims=True))
    hidden /= hidden.sum(1, keepdims=True)
    np.testing.assert_allclose(logits, hidden @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], rtol=1e-4, atol=1e-5)


def test_presets_are_specs_named_like_keras():
    model = preset("bn-before")
    assert [name for name, _ in model.layers][:4] == ["flatten", "batch_normalization", "dense",
                                                      "batch_normalization_1"]
    assert model.spec[-1]["activation"] == "softmax"
