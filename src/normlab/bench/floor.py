"""The matmul floor: how long one epoch's matrix products alone take on this machine, at batch 32.

Per Dense layer with kernel W (in, out) and a step's input x (B, in) and output gradient g (B, out):
forward ``x @ W``, weight gradient ``dW = x^T @ g`` and input gradient ``dx = g @ W^T`` — the last skipped for
a layer with nothing trainable before it (the baseline's first Dense), as autodiff skips it. A Conv2D counts as
the GEMM it lowers to (im2col): B x output positions rows of kh * kw * in_channels values, times (kh * kw * in,
filters). Each product runs ``steps`` times in a jitted ``lax.scan`` with a fresh operand per step (like the
epoch's batches; a conv's operands are large, so at most ``OPERAND_BYTES`` of them, taken in turn); ``dx`` uses
a materialised ``W^T`` (plain NN product), the fastest orientation on the CPUs we measured and the one
``nn.dense.matmul`` arranges (the transposed-operand GEMM ran at about a third of its speed); the
best of 5 repeats counts. Summed over shapes this bounds the epoch from below: everything else (BN, the
elementwise work, the optimizer, the loop) is what the engine adds on top.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from normlab.nn.models import Model, abstract

REPEATS = 5
OPERAND_BYTES = 256 << 20  # the fresh operands of one product: a full epoch of a Dense layer's, fewer of a conv's


def matmul_shapes(model: Model, batch: int) -> list[tuple[str, tuple, tuple, tuple]]:
    """``(name, per-step operand shape, fixed operand shape, contracting dims)`` for every product of a step."""
    params, _, out_shapes = abstract(model)
    shapes, trainable_before = [], False
    for (name, _), out_shape in zip(model.layers, out_shapes):
        if "kernel" in params[name]:
            kernel = params[name]["kernel"].shape
            batch_rows, n_in, n_out = batch * math.prod(out_shape[:-1]), math.prod(kernel[:-1]), kernel[-1]
            shapes += [(f"{name} fwd x@W", (batch_rows, n_in), (n_in, n_out), ((1,), (0,))),
                       (f"{name} dW=x^T@g", (batch_rows, n_in), (batch_rows, n_out), ((0,), (0,)))]
            if trainable_before:
                shapes.append((f"{name} dx=g@W^T", (batch_rows, n_out), (n_out, n_in), ((1,), (0,))))
        trainable_before |= bool(params[name])
    return shapes


def _time_product(steps: int, a_shape: tuple, b_shape: tuple, contracting: tuple) -> float:
    fresh = max(1, min(steps, OPERAND_BYTES // (4 * math.prod(a_shape))))
    a = jnp.full((fresh, *a_shape), 0.01, jnp.float32)
    b = jnp.full(b_shape, 0.01, jnp.float32)

    @jax.jit
    def run(a, b):
        def body(carry, step):  # the sum keeps every output element live, so XLA cannot drop part of the product
            return carry + jnp.sum(jax.lax.dot_general(a[step % fresh], b, (contracting, ((), ())))), None
        return jax.lax.scan(body, jnp.float32(0), jnp.arange(steps))[0]

    run(a, b).block_until_ready()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_floor(model: Model, num_examples: int, batch: int = 32) -> dict:
    """Per-shape seconds per epoch and GFLOP/s, and their sum: the epoch's matmul floor in seconds."""
    steps = -(-num_examples // batch)
    rows = []
    for name, a_shape, b_shape, contracting in matmul_shapes(model, batch):
        seconds = _time_product(steps, a_shape, b_shape, contracting)
        flop = 2 * np.prod(a_shape) * b_shape[1 - contracting[1][0]] * steps
        rows.append({"product": name, "a": list(a_shape), "b": list(b_shape), "seconds": seconds,
                     "gflop_per_s": float(flop / seconds / 1e9)})
    total = sum(r["seconds"] for r in rows)
    return {"steps": steps, "batch": batch, "repeats": REPEATS, "products": rows, "floor_s": total}
