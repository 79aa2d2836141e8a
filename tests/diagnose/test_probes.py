"""`normlab diagnose`'s measures against independent float64 NumPy computations (``reference.mlp_numpy``) on tiny
MLPs with batch norm, batch 4: internal covariate shift (Santurkar et al., Def. 2.1), the loss landscape and
gradient predictiveness by explicit parameter perturbation, percentiles, what the watched nonlinearity sees,
Ioffe & Szegedy's precise BN statistics and the batch-statistics accuracy; then the probed epoch, which must
train like ``train.loop.make_epoch`` (up to float32 rounding) and measure before steps 0, every, 2 * every, ..."""

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agreement import assert_accuracy_agrees
from conftest import synthetic_data
from normlab.diagnose.gap import make_batch_statistics_accuracy, make_precise_statistics, statistics_twin
from normlab.diagnose.measure import Probes, dense_layers, make_probed_epoch
from normlab.diagnose.probes import ics, landscape, last_hidden_nonlinearity, nonlinearity_input, percentiles
from normlab.nn.models import abstract, apply, build, preset
from normlab.train.loop import make_epoch, shuffled_batches
from normlab.train.state import create
from normlab.train.step import make_loss, make_train_step, scale_pixels
from reference import mlp_numpy as ref

BATCH = 4
LR = 0.1  # one SGD step this large moves the earlier layers visibly

# flatten 784 -> BN -> dense 5 relu -> BN -> dense 10 (softmax folded into the loss)
TINY = [("flatten", {"kind": "flatten"}),
        ("batch_normalization", {"kind": "batch_norm"}),
        ("dense", {"kind": "dense", "units": 5, "activation": "relu"}),
        ("batch_normalization_1", {"kind": "batch_norm"}),
        ("dense_1", {"kind": "dense", "units": 10, "activation": "softmax"})]
# Its first dense layer has nothing trainable before it; BN before the activation, a dense layer without bias.
DEEP = [("flatten", {"kind": "flatten"}),
        ("dense", {"kind": "dense", "units": 6, "activation": "relu"}),
        ("batch_normalization", {"kind": "batch_norm"}),
        ("dense_1", {"kind": "dense", "units": 5, "use_bias": False}),
        ("batch_normalization_1", {"kind": "batch_norm"}),
        ("activation", {"kind": "activation", "activation": "relu"}),
        ("dense_2", {"kind": "dense", "units": 10, "activation": "softmax"})]
NETS = {"tiny": TINY, "deep": DEEP}


def model_of(net, name="tiny-mlp"):
    model = build(name, [spec for _, spec in net])
    assert [name for name, _ in model.layers] == [name for name, _ in net]
    return model


def to64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def to32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def random_params(model, seed):
    """Params of ``model``'s layout with every leaf drawn (float32 values): kernels ~ N(0, 1/fan_in), biases and
    betas ~ N(0, 0.3), gammas ~ U(0.5, 1.5), so no leaf sits at an initial value that would hide a missing term;
    moving statistics far from any batch's, so a use of them shows."""
    rng = np.random.default_rng(seed)
    params, state, _ = abstract(model)  # shapes only: an eager init compiles every initializer (seconds)

    def draw(key, shape):
        if key == "kernel":
            return rng.normal(0, 1 / np.sqrt(shape[0]), shape)
        if key == "gamma":
            return rng.uniform(0.5, 1.5, shape)
        if key == "moving_mean":
            return rng.normal(3.0, 1.0, shape)
        if key == "moving_variance":
            return rng.uniform(5.0, 9.0, shape)
        return rng.normal(0, 0.3, shape)

    def redraw(tree):
        return {name: {key: jnp.asarray(draw(key, value.shape), jnp.float32) for key, value in layer.items()}
                for name, layer in tree.items()}

    return redraw(params), redraw(state)


def random_batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def batch_loss(model, state, images, labels):
    """The probes' ``loss(params)``: ``make_loss`` on one fixed batch, BN in training mode."""
    loss, mask = make_loss(model), jnp.ones(len(labels), jnp.float32)
    return lambda params: loss(params, state, scale_pixels(images), jnp.asarray(labels), mask)[0]


def close(actual, expected, rtol=1e-4, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


# --- the reference itself ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("net", NETS.values(), ids=NETS.keys())
def test_reference_gradients_match_finite_differences(net):
    """The hand-written backward pass against central differences of the float64 loss, entry by entry (every
    entry of the small leaves, 40 of each kernel)."""
    params = to64(random_params(model_of(net), 1)[0])
    images, labels = random_batch(BATCH, 2)
    x = images / 255.0
    value, grads = ref.loss_and_grads(net, params, x, labels)
    assert value == pytest.approx(ref.loss(net, params, x, labels), rel=1e-12)
    assert set(grads) == set(params) and all(set(grads[n]) == set(params[n]) for n in params)
    rng, h = np.random.default_rng(3), 1e-6
    for name, layer in params.items():
        for key, leaf in layer.items():
            entries = rng.choice(leaf.size, min(leaf.size, 40), replace=False)
            numeric = []
            for i in entries:
                plus, minus = ({n: {k: v.copy() for k, v in p.items()} for n, p in params.items()} for _ in range(2))
                plus[name][key].flat[i] += h
                minus[name][key].flat[i] -= h
                numeric.append((ref.loss(net, plus, x, labels) - ref.loss(net, minus, x, labels)) / (2 * h))
            np.testing.assert_allclose(grads[name][key].flat[entries], numeric, rtol=1e-5, atol=1e-8,
                                       err_msg=f"{name}/{key}")


@pytest.mark.parametrize("net", NETS.values(), ids=NETS.keys())
def test_reference_matches_the_jax_loss_and_gradient(net, engine):
    """The float32 model computes the same function, on every GEMM: what makes every comparison below meaningful."""
    model = model_of(net)
    params, state = random_params(model, 4)
    images, labels = random_batch(BATCH, 5)
    value, grads = jax.jit(jax.value_and_grad(batch_loss(model, state, images, labels)))(params)
    expected, expected_grads = ref.loss_and_grads(net, to64(params), images / 255.0, labels)
    close(value, expected, rtol=1e-5)
    scale = np.abs(ref.flat(expected_grads)).max()  # a leaf whose gradient is 0 in exact arithmetic (a BN beta
    for name, layer in expected_grads.items():      # right before a BN) is float32 rounding noise
        for key, g in layer.items():
            close(grads[name][key], g, rtol=1e-3, atol=1e-5 * scale)


# --- internal covariate shift -----------------------------------------------------------------------------------

@pytest.mark.parametrize("net", NETS.values(), ids=NETS.keys())
def test_ics_matches_numpy_after_one_sgd_step(net):
    """G and G' of every dense kernel after one SGD step (lr 0.1) of the reference's gradient. In DEEP the first
    dense layer has nothing trainable before it: G' is G, exactly; every other layer's shift is visible."""
    model = model_of(net)
    params, state = random_params(model, 6)
    images, labels = random_batch(BATCH, 7)
    x = images / 255.0
    params64 = to64(params)
    grads64 = ref.loss_and_grads(net, params64, x, labels)[1]
    updated = to32(ref.combine(params64, grads64, -LR))
    names, measured = [name for name, _ in net], dense_layers(model)
    assert measured == [name for name, spec in net if spec["kind"] == "dense"]
    unshifted = [layer for layer in measured if not any(params64[n] for n in names[:names.index(layer)])]
    assert unshifted == (["dense"] if net is DEEP else [])

    found = jax.jit(lambda p, u: ics(batch_loss(model, state, images, labels), p, u, names, measured))(params, updated)
    expected = ref.ics(net, params64, to64(updated), x, labels, measured)
    assert set(found) == set(measured)
    for layer in measured:
        size = np.linalg.norm(grads64[layer]["kernel"])
        close(found[layer]["l2"], expected[layer]["l2"], rtol=1e-3, atol=1e-5 * size)
        close(found[layer]["cosine"], expected[layer]["cosine"], rtol=0, atol=1e-5)
        if layer in unshifted:
            assert float(found[layer]["l2"]) == 0.0
            assert float(found[layer]["cosine"]) == pytest.approx(1.0, abs=1e-6)
        else:
            assert expected[layer]["l2"] > 1e-2 * size


# --- loss landscape, gradient predictiveness, beta-smoothness ----------------------------------------------------

@pytest.mark.parametrize("net", NETS.values(), ids=NETS.keys())
def test_landscape_matches_explicit_perturbation(net):
    """For each eta, w - eta * g built explicitly in float64 (g the reference's gradient, given to both): its loss,
    ||g - grad L(w - eta g)|| over every parameter, and beta = max over eta of that / ||eta g||."""
    model = model_of(net)
    params, state = random_params(model, 8)
    images, labels = random_batch(BATCH, 9)
    x = images / 255.0
    grads = to32(ref.loss_and_grads(net, to64(params), x, labels)[1])
    etas = np.float32([0.01, 0.1, 0.5, 2.0])

    found = jax.jit(lambda p, g: landscape(batch_loss(model, state, images, labels), p, g, jnp.asarray(etas)))(
        params, grads)
    expected = ref.landscape(net, to64(params), to64(grads), x, labels, etas.astype(np.float64))
    assert np.shape(found["loss"]) == np.shape(found["grad_distance"]) == (len(etas),)
    close(found["loss"], expected["loss"], rtol=1e-5)
    close(found["grad_distance"], expected["grad_distance"], rtol=1e-3)
    close(found["beta"], expected["beta"], rtol=1e-3)
    # a landscape that is not flat along the step: the measures see something to get wrong
    assert np.ptp(expected["loss"]) > 1e-2 and np.ptp(expected["grad_distance"] / etas) > 1e-2 * expected["beta"]


# --- percentiles ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 100, 1000, 1001])
@pytest.mark.parametrize("ties", [False, True])
def test_percentiles_match_numpy(n, ties):
    rng = np.random.default_rng(n + 1000 * ties)
    values = (rng.integers(-3, 4, n) if ties else rng.normal(0.5, 2.0, n)).astype(np.float32)
    expected = np.percentile(values.astype(np.float64), [15, 50, 85])  # linear interpolation, numpy's default
    close(percentiles(jnp.asarray(values)), expected, rtol=1e-6, atol=1e-6)


def test_percentiles_interpolate_linearly():
    close(percentiles(jnp.float32([0.0, 1.0])), [0.15, 0.5, 0.85], rtol=1e-6)
    close(percentiles(jnp.float32([4.0, 0.0, 2.0])), [0.6, 2.0, 3.4], rtol=1e-6)


# --- what the watched nonlinearity sees -------------------------------------------------------------------------

@pytest.mark.parametrize("name,index,layer,expected", [
    ("baseline", 4, "leaky_re_lu_1", lambda trace: trace[3]["y"]),  # dense_1's output (it has no activation)
    ("bn-after", 4, "dense_1", lambda trace: trace[4]["z"]),         # dense_1's pre-activation x @ W + b
    ("bn-before", 7, "activation_1", lambda trace: trace[6]["y"]),   # batch_normalization_2's gamma*x_hat + beta
])
def test_nonlinearity_input_of_the_presets(name, index, layer, expected):
    """The watched layer of each study preset and what it sees on 16 images in training mode (batch statistics,
    not the far-off moving ones), from the reference's forward pass of the same params."""
    model = preset(name)
    assert last_hidden_nonlinearity(model) == index and model.layers[index][0] == layer
    params, state = random_params(model, 10)
    images, _ = random_batch(16, 11)
    found = nonlinearity_input(model, params, state, scale_pixels(images), index)
    net = [(layer_name, spec) for (layer_name, _), spec in zip(model.layers, model.spec)]
    want = expected(ref.forward(net, to64(params), images / 255.0)[1])
    assert found.shape == want.shape
    close(found, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# --- the train/eval gap: precise and batch statistics -----------------------------------------------------------

def test_statistics_twin_is_the_model_with_momentum_zero():
    model = model_of(TINY)
    twin = statistics_twin(model)
    assert [n for n, _ in twin.layers] == [n for n, _ in model.layers]
    for spec, twin_spec in zip(model.spec, twin.spec):
        assert twin_spec == ({**spec, "momentum": 0.0} if spec["kind"] == "batch_norm" else spec)


@pytest.mark.parametrize("batches", [1, 3])
def test_precise_statistics_match_algorithm_2(batches):
    """Population statistics of both BN layers over ``batches`` batches of 4 (the images after them unused); the
    second layer's depend on the first normalizing each batch by that batch's own statistics."""
    net = [TINY[0], TINY[1], TINY[2], ("batch_normalization_1", {"kind": "batch_norm", "momentum": 0.9}), TINY[4]]
    model = model_of(net)
    params, state = random_params(model, 12)
    images, _ = random_batch(batches * BATCH + 3, 13)

    found = jax.jit(make_precise_statistics(model, batches, BATCH))(params, state, images)
    expected = ref.precise_statistics(net, to64(params), images / 255.0, batches, BATCH)
    assert set(found) == set(state)
    assert set(expected) == {"batch_normalization", "batch_normalization_1"}
    for name, (mean, variance) in expected.items():
        assert set(found[name]) == {"moving_mean", "moving_variance"}
        close(found[name]["moving_mean"], mean, rtol=1e-4, atol=1e-5)
        close(found[name]["moving_variance"], variance, rtol=1e-3, atol=1e-6)
    for name in set(state) - set(expected):
        assert found[name] == state[name]


@pytest.mark.parametrize("n", [10, 11])
def test_batch_statistics_accuracy_matches_numpy(n):
    """n images in batches of 4, the last of 2 or 3 real rows padded to 4: every batch normalized by the
    statistics of its real rows. Labels are the reference's predictions but for two rows of the full batches, so
    an image of the last batch predicted differently (its padding counted in the statistics: image 9 here) lowers
    the accuracy, and padding counted as rows raises it."""
    model = model_of(TINY)
    params, state = random_params(model, 14)
    images, _ = random_batch(n, 15)
    predicted, margins = ref.batch_statistics_predictions(TINY, to64(params), images / 255.0, BATCH)
    assert margins.min() > 1e-3  # no near tie that float32 could break the other way
    labels = predicted.copy()
    wrong = [0, 5]
    labels[wrong] = (labels[wrong] + 1) % 10

    found = jax.jit(make_batch_statistics_accuracy(model, n, BATCH))(params, state, images, labels.astype(np.int32))
    assert float(found) == pytest.approx((n - len(wrong)) / n, abs=1e-6)


# --- the probed epoch -------------------------------------------------------------------------------------------

BATCH_SIZE, ETAS, UNIT = 8, (0.1, 1.0), 1
EPOCH = jnp.int32(2)


@functools.cache
def epoch_of(n):
    """Seed 0's model, optimizer and state before epoch 2, on n synthetic images and 40 held out."""
    data = synthetic_data(n_train=n, n_val=40, n_test=1, seed=n)
    model, optimizer = model_of(TINY), optax.sgd(0.05)
    held_out = {"watch": jnp.asarray(data.x_val[:16]), "x_val": jnp.asarray(data.x_val),
                "y_val": jnp.asarray(data.y_val.astype(np.int32))}
    return SimpleNamespace(model=model, optimizer=optimizer, images=jnp.asarray(data.x_train),
                           labels=jnp.asarray(data.y_train.astype(np.int32)), held_out=held_out,
                           ts0=create(model, optimizer, 0))


@functools.cache
def replayed(n):
    """``epoch_of(n)`` step by step with ``make_train_step``, a third program: the state before each step, and the
    real rows of the epoch's batches, in order, with their training-mode probabilities before their step."""
    epoch = epoch_of(n)
    images, labels, ts = np.asarray(epoch.images), np.asarray(epoch.labels), epoch.ts0
    order = np.asarray(shuffled_batches(ts.rng, EPOCH, n, BATCH_SIZE))
    real = [min(BATCH_SIZE, n - s * BATCH_SIZE) for s in range(len(order))]
    step = jax.jit(make_train_step(epoch.model, epoch.optimizer))
    train_logits = jax.jit(lambda ts, x, mask: apply(epoch.model, ts.params, ts.model_state, scale_pixels(x), True,
                                                     mask)[0])
    states, probabilities = [], []
    for s in range(len(order)):
        mask = jnp.asarray((np.arange(BATCH_SIZE) < real[s]).astype(np.float32))
        states.append(ts)
        probabilities.append(jax.nn.softmax(train_logits(ts, images[order[s]], mask))[:real[s]])
        ts, _ = step(ts, images[order[s]], labels[order[s]], mask)
    return SimpleNamespace(order=order, real=real, states=states, train_probabilities=np.concatenate(probabilities),
                           train_labels=np.concatenate([labels[order[s, :real[s]]] for s in range(len(order))]))


@functools.cache
def probed_run(n, every):
    """``make_epoch`` and ``make_probed_epoch`` from ``epoch_of(n)``'s state, and its replay; each (n, every)
    compiled once per session, the probed program costing seconds."""
    epoch = epoch_of(n)
    arguments = (epoch.ts0, epoch.images, epoch.labels, EPOCH)
    plain = jax.jit(make_epoch(epoch.model, epoch.optimizer, n, BATCH_SIZE))(*arguments)
    probed = jax.jit(make_probed_epoch(epoch.model, epoch.optimizer, n, BATCH_SIZE, Probes(every, ETAS, UNIT)))(
        *arguments, epoch.held_out)
    return SimpleNamespace(**vars(epoch), **vars(replayed(n)), plain=plain, probed=probed)


def validation_probabilities(run, ts):
    """Inference probabilities of ``ts`` on the held-out validation images."""
    logits = apply(run.model, ts.params, ts.model_state, scale_pixels(run.held_out["x_val"]), False)[0]
    return np.asarray(jax.nn.softmax(logits))


@pytest.mark.parametrize("n,every", [
    (53, 3),   # 7 steps: chunks of 3, 3 and a remainder of 1, the padded last batch
    (48, 3),   # 6 steps: whole chunks only
    (53, 10),  # every > steps: the remainder chunk only
])
def test_probed_epoch_trains_like_make_epoch(n, every):
    """The same weights, state, optimizer state and metrics after the epoch. Equal up to float32 rounding only:
    XLA fuses the same update differently in differently shaped programs (make_epoch is not bit for bit a loop
    of its own jitted step either), 1 ulp here and there (at most 3e-7 of the largest weight on XLA's GEMM, 8e-7
    on OpenBLAS; held to 1e-5); a step skipped, repeated or fed another batch moves the weights by ~lr * gradient,
    orders of magnitude more. The accuracy counts the epoch's training predictions, each of which rounding may
    tip where two classes tie: both counts are the step-by-step replay's but for its near ties."""
    run = probed_run(n, every)
    (plain_ts, plain_metrics), (ts, metrics, measures) = run.plain, run.probed
    for a, b in zip(jax.tree.leaves((ts.params, ts.model_state, ts.opt_state)),
                    jax.tree.leaves((plain_ts.params, plain_ts.model_state, plain_ts.opt_state))):
        b = np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    np.testing.assert_array_equal(jax.random.key_data(ts.rng), jax.random.key_data(plain_ts.rng))
    close(metrics["loss"], float(plain_metrics["loss"]), rtol=1e-6)
    for accuracy in (metrics["accuracy"], plain_metrics["accuracy"]):
        assert_accuracy_agrees(float(accuracy), run.train_probabilities, run.train_labels)

    rows = -(-(-(-n // BATCH_SIZE)) // every)  # ceil(steps / every)
    assert measures["val_accuracy"].shape == measures["beta"].shape == (rows,)
    assert measures["percentiles"].shape == (rows, 3)
    assert measures["loss"].shape == measures["grad_distance"].shape == (rows, len(ETAS))
    assert set(measures["ics"]) == {"dense", "dense_1"}
    assert all(v.shape == (rows,) for layer in measures["ics"].values() for v in layer.values())
    assert_accuracy_agrees(float(measures["val_accuracy"][0]), validation_probabilities(run, run.ts0),
                           run.held_out["y_val"])


def test_probed_epoch_measures_before_steps_0_every_2every_on_the_steps_own_batch():
    """53 images at batch 8, every 3: measured before steps 0, 3 and 6, the last on the padded batch (5 real rows).
    Each row against the state trained step by step up to there: validation accuracy and the watched unit's
    percentiles by JAX, internal covariate shift (one SGD step of the optimizer's) and the landscape on that
    step's batch by the NumPy reference."""
    n, every = 53, 3
    run = probed_run(n, every)
    measures = run.probed[2]
    images, labels, held_out = np.asarray(run.images), np.asarray(run.labels), run.held_out
    order, real = run.order, run.real
    watched = last_hidden_nonlinearity(run.model)
    assert run.model.layers[watched][0] == "dense"  # relu of the 5 hidden units
    kernels = ["dense", "dense_1"]
    for s, ts in enumerate(run.states):
        if s % every == 0:
            row = s // every
            assert_accuracy_agrees(float(measures["val_accuracy"][row]), validation_probabilities(run, ts),
                                   held_out["y_val"])
            seen = nonlinearity_input(run.model, ts.params, ts.model_state, scale_pixels(held_out["watch"]), watched)
            close(measures["percentiles"][row], np.percentile(np.asarray(seen[:, UNIT], np.float64), [15, 50, 85]),
                  rtol=1e-5, atol=1e-6)
            rows = order[s, :real[s]]
            x, y, params = images[rows] / 255.0, labels[rows], to64(ts.params)
            grads = ref.loss_and_grads(TINY, params, x, y)[1]
            expected = ref.ics(TINY, params, ref.combine(params, grads, -0.05), x, y, kernels)
            for layer in kernels:
                close(measures["ics"][layer]["l2"][row], expected[layer]["l2"], rtol=2e-3, atol=1e-7)
                close(measures["ics"][layer]["cosine"][row], expected[layer]["cosine"], rtol=0, atol=1e-5)
            expected = ref.landscape(TINY, params, grads, x, y, np.float32(ETAS).astype(np.float64))
            close(measures["loss"][row], expected["loss"], rtol=1e-5)
            close(measures["grad_distance"][row], expected["grad_distance"], rtol=2e-3)
            close(measures["beta"][row], expected["beta"], rtol=2e-3)
    assert real[-1] == 5 and (len(order) - 1) % every == 0  # the padded batch was one of the measured
