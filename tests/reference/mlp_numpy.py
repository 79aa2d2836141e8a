"""Independent float64 NumPy forward and hand-written backward pass of small sequential nets. Never imported by src/.

A net is a list of ``(name, spec)`` with the spec tables of ``presets.toml`` (``kind`` and the options used here:
``activation``, ``use_bias``, ``negative_slope``; batch norm's epsilon is ``EPS``). Params are
``{name: {"kernel", "bias", "gamma", "beta"}}`` like normlab's, as float64 arrays. Batch norm runs in training mode
(the batch's mean and *biased* variance); the loss is softmax cross-entropy, the mean over the batch.
Only the layer kinds the diagnose tests need: flatten, dense (linear/relu/softmax), batch_norm, activation (relu,
linear), leaky_relu.
"""

import numpy as np

from reference import batch_norm_numpy as bn

EPS = 1e-3  # Keras' BatchNormalization epsilon


def _act(name: str, z):
    if name in ("linear", "softmax"):  # a final softmax is folded into the loss
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(f"activation {name} not in the reference")


def _act_grad(name: str, z, dy):
    if name in ("linear", "softmax"):
        return dy
    if name == "relu":
        return dy * (z > 0)
    raise ValueError(f"activation {name} not in the reference")


def forward(net, params, x):
    """``(logits, trace)`` in training mode; ``trace[i]`` holds layer i's input ``"x"``, output ``"y"``, and
    ``"z"`` (a dense layer's pre-activation) or ``"mean"``/``"var"`` (a batch norm's batch statistics)."""
    trace = []
    for name, spec in net:
        kind, p, rec = spec["kind"], params.get(name, {}), {"x": x}
        if kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "dense":
            z = x @ p["kernel"] + (p["bias"] if spec.get("use_bias", True) else 0.0)
            rec["z"] = z
            x = _act(spec.get("activation", "linear"), z)
        elif kind == "batch_norm":
            x, rec["mean"], rec["var"] = bn.forward(x, p["gamma"], p["beta"], EPS)
        elif kind == "activation":
            x = _act(spec.get("activation", "linear"), x)
        elif kind == "leaky_relu":
            x = np.where(x > 0, x, spec.get("negative_slope", 0.3) * x)
        else:
            raise ValueError(f"layer kind {kind} not in the reference")
        rec["y"] = x
        trace.append(rec)
    return x, trace


def cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[label]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def loss(net, params, x, labels):
    return cross_entropy(forward(net, params, x)[0], labels)


def loss_and_grads(net, params, x, labels):
    """The mean loss and its gradient for every parameter, by hand: softmax - one-hot, then layer by layer back."""
    logits, trace = forward(net, params, x)
    m = len(labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    value = -np.log(probs[np.arange(m), labels]).mean()
    dy = probs.copy()
    dy[np.arange(m), labels] -= 1.0
    dy /= m
    grads = {}
    for (name, spec), rec in zip(reversed(net), reversed(trace)):
        kind, p = spec["kind"], params.get(name, {})
        if kind == "flatten":
            dy = dy.reshape(rec["x"].shape)
            grads[name] = {}
        elif kind == "dense":
            dz = _act_grad(spec.get("activation", "linear"), rec["z"], dy)
            grads[name] = {"kernel": rec["x"].T @ dz}
            if spec.get("use_bias", True):
                grads[name]["bias"] = dz.sum(axis=0)
            dy = dz @ p["kernel"].T
        elif kind == "batch_norm":
            dy, dgamma, dbeta = bn.backward(dy, rec["x"], p["gamma"], EPS)
            grads[name] = {"gamma": dgamma, "beta": dbeta}
        elif kind == "activation":
            dy = _act_grad(spec.get("activation", "linear"), rec["x"], dy)
            grads[name] = {}
        elif kind == "leaky_relu":
            dy = np.where(rec["x"] > 0, dy, spec.get("negative_slope", 0.3) * dy)
            grads[name] = {}
    return value, {name: grads[name] for name, _ in net}


def flat(tree) -> np.ndarray:
    """Every array of ``{layer: {key: array}}`` in one vector, layers and keys in sorted order."""
    parts = [np.ravel(tree[name][key]) for name in sorted(tree) for key in sorted(tree[name])]
    return np.concatenate(parts) if parts else np.zeros(0)


def combine(a, b, alpha: float = 1.0):
    """``a + alpha * b`` leaf by leaf."""
    return {name: {key: a[name][key] + alpha * b[name][key] for key in a[name]} for name in a}


def ics(net, params, updated, x, labels, measured):
    """Santurkar et al.'s Definition 2.1 by brute force: for each layer in ``measured``, the kernel gradient at
    ``params`` and at ``params`` with every layer before it taken from ``updated``."""
    names = [name for name, _ in net]
    g = loss_and_grads(net, params, x, labels)[1]
    found = {}
    for layer in measured:
        earlier = names[:names.index(layer)]
        shifted = {name: updated[name] if name in earlier else params[name] for name in params}
        a, b = g[layer]["kernel"].ravel(), loss_and_grads(net, shifted, x, labels)[1][layer]["kernel"].ravel()
        found[layer] = {"l2": np.linalg.norm(a - b), "cosine": a @ b / (np.linalg.norm(a) * np.linalg.norm(b))}
    return found


def landscape(net, params, grads, x, labels, etas):
    """Santurkar et al.'s Fig. 4 by explicit perturbation: for each eta, w' = w - eta g, L(w') and ||g - grad L(w')||;
    beta = max over eta of that distance / ||eta g||."""
    losses, distances = [], []
    g = flat(grads)
    for eta in etas:
        value, there = loss_and_grads(net, combine(params, grads, -eta), x, labels)
        losses.append(value)
        distances.append(np.linalg.norm(g - flat(there)))
    losses, distances = np.array(losses), np.array(distances)
    return {"loss": losses, "grad_distance": distances,
            "beta": max(d / (eta * np.linalg.norm(g)) for d, eta in zip(distances, etas))}


def precise_statistics(net, params, images, batches: int, batch_size: int):
    """Ioffe & Szegedy's Algorithm 2 (steps 8-11): ``{bn layer: (E[x], Var[x])}`` over ``batches`` consecutive full
    batches, each run through the whole net in training mode (every BN normalizing by that batch's own statistics):
    E[x] = mean of the batch means, Var[x] = m/(m-1) * mean of the biased batch variances."""
    means, variances = {}, {}
    for b in range(batches):
        _, trace = forward(net, params, images[b * batch_size:(b + 1) * batch_size])
        for (name, spec), rec in zip(net, trace):
            if spec["kind"] == "batch_norm":
                means.setdefault(name, []).append(rec["mean"])
                variances.setdefault(name, []).append(rec["var"])
    unbiased = batch_size / (batch_size - 1)
    return {name: (np.mean(means[name], axis=0), unbiased * np.mean(variances[name], axis=0)) for name in means}


def batch_statistics_predictions(net, params, images, batch_size: int):
    """``(classes, margins)``: the predicted class of every image, each batch of ``batch_size`` consecutive images
    (the last one as short as it comes) normalized by its own statistics, and each top logit's lead over the next."""
    predicted, margins = [], []
    for start in range(0, len(images), batch_size):
        logits = forward(net, params, images[start:start + batch_size])[0]
        top = np.sort(logits, axis=1)
        predicted.append(np.argmax(logits, axis=1))
        margins.append(top[:, -1] - top[:, -2])
    return np.concatenate(predicted), np.concatenate(margins)
