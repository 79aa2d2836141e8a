"""Keras semantics, step by step: the seed study's presets trained by Keras 3 (JAX backend) and by normlab's
training step (what ``fit`` scans over an epoch) from the same initial weights over the same batches in order
(Keras' ``shuffle=False``, normlab's ``--no-shuffle``) agree on every weight, moving statistics included — not
only in 5-seed statistics.

In float64 they agree within 1e-4 after 1, 10 and 200 steps (in fact within a few 1e-6). In float32, the dtype
both train in, they agree to rounding until a ReLU whose input is within rounding of 0 switches in one framework
and not in the other (bn-after: at step 17 for this seed), after which the two runs are equally right and drift
apart by up to ~5e-4; so float32 is held to 1e-4 at steps 1 and 10. float32 runs on every GEMM that loads here
(``engine``), with SGD's step in the BLAS GEMM as fit takes it there; the BLAS GEMMs are float32 only.
"""

import jax
import numpy as np
import pytest

from conftest import sgd_rate
from normlab.engine import gemm
from normlab.interop.mirror import keras_model
from normlab.errors import ConfigError
from normlab.interop.keras_io import load_keras, set_layers
from normlab.interop.weights import Weights, by_layer
from normlab.nn.models import init, preset
from normlab.nn.summary import describe, variables
from normlab.train.loop import TrainConfig, make_optimizer
from normlab.train.state import TrainState
from normlab.train.step import make_train_step

try:
    keras = load_keras()
except ConfigError as error:
    pytest.skip(str(error), allow_module_level=True)

pytestmark = pytest.mark.full_data
BATCH, LEARNING_RATE, TOLERANCE = 32, 1e-3, 1e-4
STEPS = {"float32": (1, 10), "float64": (1, 10, 200)}


def flat(arrays: dict) -> list:
    """Every layer's arrays in one list: ``nn.summary.variables``' order."""
    return [array for layer in arrays.values() for array in layer]


@pytest.fixture
def dtype(request):
    """Keras' floatx and dtype policy, and JAX's x64 mode, for one test; restored after it."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    with jax.enable_x64(request.param == "float64"):
        keras.config.set_floatx(request.param)
        keras.config.set_dtype_policy(request.param)
        try:
            yield request.param
        finally:
            keras.config.set_floatx(floatx)
            keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize("dtype, name", [("float64", "baseline"), ("float64", "bn-after"), ("float64", "bn-before"),
                                         ("float32", "bn-after")], indirect=["dtype"])
def test_sgd_steps_match_keras_weight_for_weight(name, dtype, real_data, engine):
    if dtype == "float64" and engine != "xla":
        pytest.skip("a BLAS GEMM computes float32 only: float64 products are XLA's")
    model = preset(name)
    params, state = jax.tree.map(lambda a: a.astype(dtype), init(model, jax.random.key(7)))
    mirror = keras_model(keras, describe(model))
    set_layers(mirror, Weights(model, params, state))  # by layer name: a functional model orders its weights itself
    start = by_layer(Weights(model, params, state))
    mirror.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE), loss="sparse_categorical_crossentropy")
    images, labels = real_data.x_train, real_data.y_train.astype(np.int32)
    optimizer = make_optimizer(TrainConfig(LEARNING_RATE, BATCH, 1, "sgd", 0.0))
    step = jax.jit(make_train_step(model, optimizer, sgd_rate(engine, LEARNING_RATE)))  # what fit's epoch scans
    ts = TrainState(params, state, optimizer.init(params), None)
    folded = gemm.STEP_TARGET in step.lower(ts, images[:BATCH], labels[:BATCH], np.ones(BATCH, np.float32)).as_text()
    assert folded == (engine != "xla")  # on a BLAS the kernels step inside their GEMMs, as in fit
    done = 0
    for steps in STEPS[dtype]:
        rows = slice(done * BATCH, steps * BATCH)  # Keras carries on where it stopped: plain SGD keeps no state
        mirror.fit(images[rows].astype(np.float32) / 255, labels[rows], batch_size=BATCH, epochs=1, shuffle=False,
                   verbose=0)
        for batch in range(done, steps):
            ts, _ = step(ts, images[batch * BATCH:(batch + 1) * BATCH], labels[batch * BATCH:(batch + 1) * BATCH],
                         np.ones(BATCH, np.float32))
        done = steps
        ours = by_layer(Weights(model, ts.params, ts.model_state))
        keras_side = {layer: mirror.get_layer(layer).get_weights() for layer in ours}
        for path, mine, theirs, before in zip([v.path for v in variables(model)],
                                              *map(flat, (ours, keras_side, start)), strict=True):
            assert mine.dtype == theirs.dtype == np.dtype(dtype), path
            gap = float(np.abs(mine - theirs).max())
            assert gap <= TOLERANCE, f"{name} {dtype} step {steps}: {path} differs from Keras' by {gap:.2e}"
            assert steps == 1 or not np.array_equal(mine, before), f"{path} never changed"
