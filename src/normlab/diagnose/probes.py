"""What the two papers measured, as pure functions of a loss and its parameters (a pytree of arrays).

``loss(params) -> scalar`` is the training loss on one batch with every other input fixed (BN in training mode,
the same noise draw, the same dropout key), so each measure below compares gradients of one and the same function.
"""

import jax
import jax.numpy as jnp

from normlab.errors import ConfigError
from normlab.nn import spec as specs
from normlab.nn.models import Model, input_of, outputs

PERCENTILES = (15, 50, 85)  # Ioffe & Szegedy, Fig. 1(b, c)


def norm(tree) -> jax.Array:
    """The l2 norm of all leaves together, as if flattened into one vector."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def _dot(a, b) -> jax.Array:
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def ics(loss, params: dict, updated: dict, layer_names: list[str], measured: list[str]) -> dict:
    """Internal covariate shift by Santurkar et al.'s Definition 2.1, for each layer in ``measured``.

    G = grad of the loss w.r.t. layer i's kernel at the current params; G' = the same after every layer *before*
    i has taken its update (``updated``: the params after this step) and layers i, i+1, ... have not. Returns
    ``{layer: {"l2": ||G - G'||, "cosine": cos(G, G')}}``: how much the earlier layers' step changed what layer i
    should do.
    """
    grad = jax.grad(loss)
    before = grad(params)
    found = {}
    for name in measured:
        earlier = set(layer_names[:layer_names.index(name)])
        after = grad({n: updated[n] if n in earlier else params[n] for n in params})
        g, g_shifted = before[name]["kernel"], after[name]["kernel"]
        found[name] = {"l2": norm(g - g_shifted), "cosine": _dot(g, g_shifted) / (norm(g) * norm(g_shifted))}
    return found


def landscape(loss, params, grads, etas) -> dict:
    """Santurkar et al.'s Fig. 4, along the gradient ``grads`` (g) at ``params`` (w), for each step size eta:

    * ``loss``: L(w - eta g), the loss landscape along the step;
    * ``grad_distance``: ||g - grad L(w - eta g)||, how well the gradient here predicts the gradient there;
    * ``beta``: the effective beta-smoothness, max over eta of grad_distance / ||eta g||.
    """
    value_and_grad = jax.value_and_grad(loss)
    step = norm(grads)

    def at(eta):
        value, there = value_and_grad(jax.tree.map(lambda p, g: p - eta * g, params, grads))
        return value, norm(jax.tree.map(jnp.subtract, grads, there))

    losses, distances = jax.vmap(at)(etas)
    return {"loss": losses, "grad_distance": distances, "beta": jnp.max(distances / (etas * step))}


def percentiles(values) -> jax.Array:
    """The 15th, 50th and 85th percentiles, interpolated linearly between order statistics as numpy does."""
    return jnp.percentile(values, jnp.asarray(PERCENTILES, jnp.float32))


def _nonlinear(spec: dict) -> bool:
    if spec["kind"] == "leaky_relu":
        return True
    return spec["kind"] in ("activation", "dense") and spec.get("activation") not in ("linear", "softmax")


def last_hidden_nonlinearity(model: Model) -> int:
    """The index of the layer that applies the last hidden layer's nonlinearity (Ioffe & Szegedy's Fig. 1 unit)."""
    found = [i for i, node in enumerate(model.graph[:-1]) if _nonlinear(node.spec)]
    if not found:
        raise ConfigError(f"model {model.name} has no hidden nonlinearity; diagnose watches the input of the last "
                          f"one (Ioffe & Szegedy's Fig. 1): give the model a hidden layer with an activation")
    return found[-1]


def measuring_key(model: Model):
    """The key of diagnose's training-mode passes that are no training step (the histograms' snapshot, the
    train/eval gap): one fixed draw, so a random layer (dropout) drops the same units at every measurement and two
    epochs' measures differ by their weights alone. None for a model without random layers."""
    return jax.random.key(0) if model.is_random() else None


def nonlinearity_input(model: Model, params, state, x, index: int, key=None):
    """What layer ``index``'s nonlinearity sees, in training mode: for a BN model gamma*x_hat + beta of the batch
    ``x``; for a dense layer with its own activation, its pre-activation x @ kernel + bias. ``key``: the random
    layers' draw (``models.outputs``)."""
    values, _ = outputs(model, params, state, x, True, until=index, key=key)
    x = input_of(model, index, values, x)
    spec, (name, _) = model.graph[index].spec, model.layers[index]
    if spec["kind"] == "dense":  # the same layer with its activation left out: models are data
        x, _ = specs.build_layer({**spec, "activation": "linear"}).apply(params[name], state[name], x, True)
    return x
