"""Our norms against the frameworks users compare us with: PyTorch, and Keras 3 on its JAX backend.

Each test gives both sides the same random weights and state and the same inputs (flat ``(B, C)`` and images
``(B, H, W, C)``; PyTorch's channel-first modules get NCHW), then compares outputs, the input gradient, the weight
gradients and the state after each training step. The peers are the ``[dev]`` extra: without them these tests
are skipped, with the reason.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.errors import ConfigError
from normlab.norms import batch_norm, batch_renorm, group_norm, layer_norm, rms_norm

C = 12  # channels: 3 groups of 4 (groups of 2 values cancel to float32 noise in the input gradient)
FLAT, IMAGES = (8, C), (4, 3, 3, C)
GROUPS = 3
# Random values for every weight and state name, the peers' names (PyTorch's are mapped to them below).
DRAW = {
    "gamma": lambda rng, n: rng.normal(1.0, 0.5, n), "scale": lambda rng, n: rng.normal(1.0, 0.5, n),
    "beta": lambda rng, n: rng.normal(0.0, 0.5, n),
    "moving_mean": lambda rng, n: rng.normal(0.0, 1.0, n), "renorm_mean": lambda rng, n: rng.normal(0.0, 1.0, n),
    "moving_variance": lambda rng, n: rng.uniform(0.5, 2.0, n),
    "moving_stddev": lambda rng, n: rng.uniform(0.7, 1.4, n), "renorm_stddev": lambda rng, n: rng.uniform(0.7, 1.4, n),
}


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason="torch not installed (the [dev] extra)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend with JAX's pool
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def keras():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", "jax")  # read once, when keras is first imported
        keras = pytest.importorskip("keras", reason="keras not installed (the [dev] extra)")
        assert keras.backend.backend() == "jax", "keras was imported before with another backend; these need JAX"
        yield keras


class Step(NamedTuple):
    """One call of a layer, NHWC: output, input gradient, weight gradients and state, by Keras name."""
    y: object
    dx: object
    grads: dict
    state: dict


def close(actual, expected, terms=0.0):
    """float32 agreement, absolute error scaled by the values' size (a sum over the batch is larger), or by that of
    the ``terms`` they are a sum of, where those cancel."""
    expected = np.asarray(expected, np.float64)
    atol = 2e-5 * max(1.0, float(np.abs(expected).max(initial=0.0)), terms)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-4, atol=atol)


def assert_same(ours: Step, peer: Step, dx_terms=0.0):
    close(ours.y, peer.y)
    close(ours.dx, peer.dx, dx_terms)
    assert set(ours.grads) == set(peer.grads)
    for name, grad in peer.grads.items():
        close(ours.grads[name], grad)
    assert set(peer.state) <= set(ours.state)
    for name, value in peer.state.items():
        close(ours.state[name], value)


def batch(shape, rng, loc=2.0, spread=3.0):
    """Inputs far from zero mean and unit variance (as raw features are) and an output gradient."""
    return np.float32(rng.normal(loc, spread, shape)), np.float32(rng.normal(0.0, 1.0, shape))


def random_weights(layer, shape, rng):
    """The layer's params and state with every known name drawn at random, so no default hides a mix-up."""
    params, state, _ = layer.init(jax.random.key(0), shape[1:])
    draw = lambda tree: {k: np.float32(DRAW[k](rng, v.shape)) if k in DRAW else v for k, v in tree.items()}
    return draw(params), draw(state)


@functools.partial(jax.jit, static_argnames=("layer", "train"))  # one compile per layer and shape; op by op: 5x slower
def ours_step(layer, params, state, x, dy, train) -> Step:
    y, vjp, new_state = jax.vjp(lambda p, xs: layer.apply(p, state, xs, train), params, x, has_aux=True)
    grads, dx = vjp(dy)
    return Step(y, dx, grads, new_state)


# --- PyTorch ---------------------------------------------------------------------------------------------------
TORCH_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def torch_names(module, torch):
    return TORCH_NAMES | ({"weight": "scale"} if isinstance(module, torch.nn.RMSNorm) else {})


def torch_load(torch, module, values: dict):
    names = torch_names(module, torch)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if name in names:
                tensor.copy_(torch.from_numpy(np.float32(values[names[name]])))


def torch_step(torch, module, x, dy, train, channels_first) -> Step:
    """One call; a channel-first module sees NCHW, and its results come back NHWC."""
    to_torch = (lambda a: np.moveaxis(a, -1, 1)) if channels_first and x.ndim == 4 else (lambda a: a)
    back = (lambda a: np.moveaxis(a, 1, -1)) if channels_first and x.ndim == 4 else (lambda a: a)
    names = torch_names(module, torch)
    module.train(train)
    module.zero_grad(set_to_none=True)
    xt = torch.tensor(to_torch(x), requires_grad=True)
    y = module(xt)
    y.backward(torch.from_numpy(np.ascontiguousarray(to_torch(dy))))
    grads = {names[n]: p.grad.numpy() for n, p in module.named_parameters()}
    state = {names[n]: b.numpy().copy() for n, b in module.named_buffers() if n in names}
    return Step(back(y.detach().numpy()), back(xt.grad.numpy()), grads, state)


def torch_batch_norm(torch, shape):
    return (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(C, eps=1e-5, momentum=0.1)


@pytest.mark.parametrize("shape", [(2, C), (24, C), (32, C), (2, 3, 3, C)], ids=str)
def test_batch_norm_pytorch_convention_matches_torch_over_several_steps_and_in_eval(torch, shape):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    layer = batch_norm(momentum=0.1, epsilon=1e-5, convention="pytorch")
    module = torch_batch_norm(torch, shape)
    params, state = random_weights(layer, shape, rng)
    torch_load(torch, module, params | state)
    for _ in range(3):  # the running statistics after one step, and after several
        x, dy = batch(shape, rng)
        ours = ours_step(layer, params, state, x, dy, True)
        theirs = torch_step(torch, module, x, dy, True, channels_first=True)
        assert_same(ours, theirs, batch_norm_dx_terms(params, x, dy))
        state = ours.state
    x, dy = batch(shape, rng)
    assert_same(ours_step(layer, params, state, x, dy, False), torch_step(torch, module, x, dy, False, True))


def batch_norm_dx_terms(params, x, dy) -> float:
    """The size of the terms a training batch norm's input gradient sums, gamma / sigma * dy: at batch 2 they
    cancel to 1e-3 of it, so both sides' float32 rounding is that of the terms (1.3e-5 apart here), not of dx."""
    sigma = np.sqrt(x.reshape(-1, x.shape[-1]).astype(np.float64).var(axis=0) + 1e-5)
    return float(np.max(np.abs(np.asarray(params["gamma"], np.float64)) / sigma) * np.abs(dy).max())


def test_batch_norm_pytorch_convention_refuses_a_batch_of_one_in_training_as_torch_does(torch):
    x, dy = batch((1, C), np.random.default_rng(1))
    module = torch_batch_norm(torch, x.shape)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        module.train()(torch.from_numpy(x))
    layer = batch_norm(convention="pytorch")
    params, state = random_weights(layer, x.shape, np.random.default_rng(2))
    with pytest.raises(ConfigError, match="batch of 1"):
        layer.apply(params, state, jnp.asarray(x), True)
    torch_load(torch, module, params | state)  # inference takes one example on both sides
    assert_same(ours_step(layer, params, state, x, dy, False), torch_step(torch, module, x, dy, False, False))


class PerExample(NamedTuple):
    """A norm with no batch statistics and its two peers, on the same epsilon."""
    ours: object  # built once, so its compiled step is shared by the PyTorch and the Keras test
    torch: object  # torch.nn -> module
    channels_first: bool
    keras: str
    options: dict


PER_EXAMPLE = {
    "layer_norm": PerExample(layer_norm(epsilon=1e-5), lambda nn: nn.LayerNorm(C, eps=1e-5), False,
                             "LayerNormalization", {"epsilon": 1e-5}),
    "group_norm": PerExample(group_norm(groups=GROUPS, epsilon=1e-5), lambda nn: nn.GroupNorm(GROUPS, C, eps=1e-5),
                             True, "GroupNormalization", {"groups": GROUPS, "epsilon": 1e-5}),
    "rms_norm": PerExample(rms_norm(epsilon=1e-6), lambda nn: nn.RMSNorm(C, eps=1e-6), False,
                           "RMSNormalization", {"epsilon": 1e-6}),
}


def per_example_case(kind, shape):
    """Our result on random weights and inputs, and those weights and inputs for the peer."""
    rng = np.random.default_rng(len(kind) + len(shape))
    layer = PER_EXAMPLE[kind].ours
    params, state = random_weights(layer, shape, rng)
    x, dy = batch(shape, rng)
    return ours_step(layer, params, state, x, dy, True), params, x, dy


@pytest.mark.parametrize("shape", [FLAT, IMAGES], ids=str)
@pytest.mark.parametrize("kind", PER_EXAMPLE)
def test_per_example_norms_match_torch(torch, kind, shape):
    ours, params, x, dy = per_example_case(kind, shape)
    module = PER_EXAMPLE[kind].torch(torch.nn)
    torch_load(torch, module, params)
    assert_same(ours, torch_step(torch, module, x, dy, True, PER_EXAMPLE[kind].channels_first))


# --- Keras (JAX backend) ---------------------------------------------------------------------------------------
def keras_step(layer, values: dict, x, dy, train) -> Step:
    """One ``stateless_call`` under ``jax.vjp``: Keras' own code, our weights, no variable mutated."""
    trainable = [values[v.name] for v in layer.trainable_variables]
    fixed = [values[v.name] for v in layer.non_trainable_variables]
    y, dx, grads, new_fixed = _keras_vjp(layer, trainable, fixed, x, dy, train)
    return Step(y, dx, {v.name: g for v, g in zip(layer.trainable_variables, grads)},
                {v.name: s for v, s in zip(layer.non_trainable_variables, new_fixed)})


@functools.partial(jax.jit, static_argnames=("layer", "train"))
def _keras_vjp(layer, trainable, fixed, x, dy, train):
    mode = {} if train is None else {"training": train}
    call = lambda weights, xs: layer.stateless_call(weights, fixed, xs, **mode)
    y, vjp, new_fixed = jax.vjp(call, trainable, x, has_aux=True)
    grads, dx = vjp(dy)
    return y, dx, grads, new_fixed


def keras_layer(keras, name, shape, **options):
    layer = getattr(keras.layers, name)(**options)
    layer.build(shape)
    return layer


@pytest.mark.parametrize("shape", [FLAT, IMAGES], ids=str)
@pytest.mark.parametrize("kind", PER_EXAMPLE)
def test_per_example_norms_match_keras(keras, kind, shape):
    ours, params, x, dy = per_example_case(kind, shape)
    peer = keras_layer(keras, PER_EXAMPLE[kind].keras, shape, **PER_EXAMPLE[kind].options)
    assert_same(ours, keras_step(peer, params, x, dy, None))  # None: these Keras layers have no training mode


@pytest.mark.parametrize("shape", [FLAT, IMAGES], ids=str)
def test_batch_norm_matches_keras_over_several_steps_and_in_inference(keras, shape):
    layer = batch_norm(momentum=0.9, epsilon=1e-2)  # both far from the defaults: a dropped option shows
    peer = keras_layer(keras, "BatchNormalization", shape, momentum=0.9, epsilon=1e-2)
    rng = np.random.default_rng(len(shape) + 50)
    params, state = random_weights(layer, shape, rng)
    values = params | state
    for train in (True, True, False):
        x, dy = batch(shape, rng)
        ours, theirs = ours_step(layer, params, state, x, dy, train), keras_step(peer, values, x, dy, train)
        assert_same(ours, theirs)
        state, values = ours.state, values | theirs.state


@pytest.mark.parametrize("shape", [(16, C), IMAGES], ids=str)
def test_batch_renorm_matches_keras_renorm_with_binding_clipping(keras, shape):
    """Inputs whose statistics sit far from the renorm ones, differently each step, so every bound bites."""
    rmax, dmax, epsilon = 1.5, 0.5, 1e-3
    layer = batch_renorm(momentum=0.9, epsilon=epsilon, renorm_momentum=0.8, rmax=rmax, dmax=dmax)
    peer = keras_layer(keras, "BatchNormalization", shape, momentum=0.9, epsilon=epsilon, renorm=True,
                       renorm_momentum=0.8, renorm_clipping={"rmax": rmax, "rmin": 1 / rmax, "dmax": dmax})
    rng = np.random.default_rng(len(shape))
    params, state = random_weights(layer, shape, rng)
    values = params | state
    for step in range(4):
        x, dy = batch(shape, rng, loc=rng.normal(0.0, 2.0, C), spread=rng.uniform(0.3, 3.0, C))
        if step == 0:
            axes = tuple(range(len(shape) - 1))
            r = np.sqrt(x.var(axes) + epsilon) / state["renorm_stddev"]
            d = (x.mean(axes) - state["renorm_mean"]) / state["renorm_stddev"]
            assert (r > rmax).any() and (r < 1 / rmax).any() and (abs(d) > dmax).any()
        ours, theirs = ours_step(layer, params, state, x, dy, True), keras_step(peer, values, x, dy, True)
        assert set(theirs.state) == {"moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
                                     "renorm_stddev"}
        assert_same(ours, theirs)
        state, values = ours.state, values | theirs.state
    x, dy = batch(shape, rng)
    assert_same(ours_step(layer, params, state, x, dy, False), keras_step(peer, values, x, dy, False))
